"""What one pass of the threshold search costs, and the alternatives tried.

Usage: python -m benchmarks.speed.search_kernels [--size 266200] [--repeats 50]

On one float32 array of ``--size`` random scores |N(0,1) * N(0,1)| (the
size of LeNet-300-100's kernels), times:

* per pass, inside a jitted ``fori_loop`` of 20 passes (so that the call
  overhead is shared): the two counts the searches use (on XLA:CPU, for a
  matrix: the float compare times a vector of ones, here on the scores as
  a matrix of rows of 200; otherwise: the float compare written as
  bfloat16, summed in float32), the latter written as float32, the count on
  the integer keys, a float and an integer minimum of
  the scores above a candidate, and counts of 2, 4 and 8 candidates in one
  pass;
* per call: a scatter histogram (256 and 65,536 bins), `jnp.nonzero`,
  `jnp.cumsum`, `jax.lax.top_k` for several k, and the whole search of each
  route (``global_threshold`` at Q = size / 60, the scores as rows of 200).

Medians of ``--repeats`` calls after compilation, in microseconds. The
README's "Step overhead" section quotes a run of it.
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

from examples.paper import timing
import gsm_optax

_PASSES = 20


def median_us(f, *args, repeats=50):
  """Median microseconds of ``f(*args)`` after one compiling call."""
  return timing.median_seconds({'f': lambda: f(*args)}, repeats)['f'] * 1e6


def per_pass(body):
  """A jitted loop of _PASSES calls of ``body(scores, keys, value, key)``,
  each at a different candidate so that none can be hoisted."""
  def loop(scores, keys, value, key):
    def step(i, acc):
      return acc + body(scores, keys, value * (1 + i * 1e-6), key + i).astype(
          jnp.float32)
    return jax.lax.fori_loop(0, _PASSES, step, jnp.float32(0))
  return jax.jit(loop)


def multi_count(k):
  def body(t, keys, value, key):
    del keys, key
    candidates = value * jnp.linspace(0.5, 2.0, k, dtype=t.dtype)
    return jnp.sum(jnp.sum((t[:, None] >= candidates).astype(t.dtype), 0))
  return body


def matrix_count(t, keys, value, key):
  """The searches' count on XLA:CPU, on the scores as rows of 200 (the
  matrix count where the rows are enough, else the reduction)."""
  del keys, value
  from gsm_optax._src.selection import counting  # pylint: disable=import-outside-toplevel
  return counting.count_float([t.reshape(-1, 200)], key)


def reduction_count(t, keys, value, key):
  """The searches' count elsewhere (other arrays, other backends)."""
  del keys, key
  from gsm_optax._src.selection import counting  # pylint: disable=import-outside-toplevel
  return counting.count_leaf(t, value, jnp.int32)


PASSES = {
    'count, matrix compare times ones (the searches, XLA:CPU, matrices)':
        matrix_count,
    'count, float compare as bfloat16 summed in float32 (the searches)':
        reduction_count,
    'count, float compare as float32 summed in float32':
        lambda t, k, v, c: jnp.sum((t >= v).astype(jnp.float32)),
    'count, integer keys summed in int32':
        lambda t, k, v, c: jnp.sum(k >= c),
    'minimum above a candidate, float':
        lambda t, k, v, c: jnp.min(jnp.where(t >= v, t, jnp.inf)),
    'minimum above a candidate, integer keys':
        lambda t, k, v, c: jnp.min(jnp.where(k >= c, k, 2**31 - 1)),
    'counts of 2 candidates in one pass': multi_count(2),
    'counts of 4 candidates in one pass': multi_count(4),
    'counts of 8 candidates in one pass': multi_count(8),
}


def calls(size):
  q = size // 60
  out = {
      f'scatter histogram, {b} bins': jax.jit(
          lambda k, b=b: jnp.zeros(b, jnp.int32).at[
              k >> (31 - int(np.log2(b)))].add(1))
      for b in (256, 65536)}
  out['jnp.nonzero(size=8192)'] = jax.jit(
      lambda k: jnp.nonzero(k >= 0x3c000000, size=8192)[0])
  out['jnp.cumsum'] = jax.jit(lambda k: jnp.cumsum(k >= 0x3c000000))
  for k in (8, 512, q):
    out[f'jax.lax.top_k, k={k}'] = jax.jit(
        lambda x, k=k: jax.lax.top_k(x, k)[0][-1])
  for method in gsm_optax.SELECTION_METHODS:
    if method != 'top_k':
      out[f"global_threshold(method='{method}'), Q = size / 60"] = jax.jit(
          functools.partial(
              lambda x, m: gsm_optax.global_threshold(
                  [jax.lax.bitcast_convert_type(x, jnp.float32).reshape(
                      -1, 200)], q, m), m=method))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--size', type=int, default=266200)
  parser.add_argument('--repeats', type=int, default=50)
  args = parser.parse_args()
  if args.size % 200:
    parser.error(f'--size must be a multiple of 200 (rows of 200 scores); '
                 f'got {args.size}.')
  rng = np.random.default_rng(0)
  scores = jnp.asarray(np.abs(rng.standard_normal(args.size) *
                              rng.standard_normal(args.size)), jnp.float32)
  keys = jax.lax.bitcast_convert_type(scores, jnp.int32)
  value = jnp.float32(0.5)
  key = jax.lax.bitcast_convert_type(value, jnp.int32)
  print(f'jax {jax.__version__}, {jax.devices()[0].device_kind}, '
        f'{args.size:,} scores')
  print('per pass (median of loops of 20 passes):')
  for name, body in PASSES.items():
    us = median_us(per_pass(body), scores, keys, value, key,
                   repeats=args.repeats) / _PASSES
    print(f'  {name:<66} {us:8.1f} us', flush=True)
  print('per call:')
  for name, f in calls(args.size).items():
    print(f'  {name:<66} {median_us(f, keys, repeats=args.repeats):8.1f} us',
          flush=True)


if __name__ == '__main__':
  main()
