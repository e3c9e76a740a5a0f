"""Counting passes of the exact threshold search on real GSM steps.

Usage:
  python -m benchmarks.speed.search_passes [--steps 120]
      [--dense runs/benchmarks/lenet300/s0/gsm_r60]

Trains LeNet-300-100 with GSM (60x, lr 3e-2 held constant, momentum 0.99
Nesterov, weight decay 5e-4, batch 256 of Fashion-MNIST) for ``--steps``
steps from the dense model saved by a benchmark run (``python -m
benchmarks.accuracy.run --part comparison --models lenet300 --seeds 0 --ratios 10``
trains it). On each step's scores |g * w| it counts, for Q = N / ratio at
each of ``--ratios``, the passes over all scores of NumPy re-statements of
gsm_optax's two searches:

* `bisect_passes`: ``method='bisect'``, with its early stop;
* `interpolate_passes`: ``method='interpolate'`` (the default), started
  from the mean score (``global_threshold`` without a guess: GSM's first
  step) and from the previous step's Q-th largest score (what
  `keep_top_taylor` does from its second step on).

It also prints how far the Q-th largest score moves between steps at 60x,
and times gsm_optax's two searches (jitted ``global_threshold`` on the
three kernels' scores, at Q = N / 60), and the default one started from
the previous step's threshold, on every 10th step from the 10th: medians
of 20 calls per step, then the median and range over those steps.
(Before commit 1c40722 it also simulated a bisection warm-started from
the previous step's threshold: 14.0 passes on average, at most 27.)
"""

import argparse
import functools

import numpy as np

_TOP = 0x7f800000  # key of +inf: above every finite score
_TINY = 0x00800000  # key of the smallest normal float32
WARM = 'interpolate from last threshold'


def _counter(keys):
  descending = np.sort(keys)[::-1]
  return lambda c: int(np.searchsorted(-descending, -c, side='right'))


def bisect_passes(keys, q):
  """gsm_optax's bisection on the key bits, stopping once exactly Q keys
  reach the prefix (then one pass takes their minimum).

  Args:
    keys: int32 bit patterns of non-negative float32 scores.
    q: how many to keep, 1 <= q <= keys.size.

  Returns:
    ``(key, passes)``: the Q-th largest key and the passes over all keys.
  """
  count = _counter(keys)
  prefix, n_prefix, passes = 0, keys.size, 0
  for bit in range(30, -1, -1):
    if n_prefix == q:
      return int(keys[keys >= prefix].min()), passes + 1
    candidate = prefix | (1 << bit)
    n = count(candidate)
    passes += 1
    if n >= q:
      prefix, n_prefix = candidate, n
  if n_prefix == q:  # the search also ends with a minimum pass here
    return int(keys[keys >= prefix].min()), passes + 1
  return prefix, passes


def interpolate_passes(keys, q, tail_exponent=1.5, interpolation_passes=16,
                       start=None):
  """gsm_optax's ``method='interpolate'``, in float64 arithmetic.

  Regula falsi (Illinois) on log(count) against the key between the
  smallest normal number and +inf, first candidate ``start`` (a key; the
  previous step's answer) if it is a normal finite number, else the mean
  score, steps
  along an assumed or measured slope while an end has not moved, bisection
  after ``interpolation_passes`` passes, and `bisect_passes` when the answer
  lies below the smallest normal number. From the mean, it does not count
  the pass that computes the mean. (Until 2026-11-28 both searches made a
  first pass, a sum that checked that every score was finite, not counted
  either.)

  Returns:
    ``(key, passes)``, as `bisect_passes`; keys must be finite scores.
  """
  count = _counter(keys)
  floor, total = _TINY, keys.size
  keys_per_efold = 2.0**23 / np.log(2.0)
  if start is not None and floor <= start < _TOP:
    candidate = int(start)
  else:
    mean = np.float32(keys.view(np.float32).astype(np.float64).mean())
    candidate = int(np.array(mean, np.float32).view(np.int32))
  lo, n_lo, hi, n_hi = floor, total, _TOP, 0
  kept, w_lo, w_hi, passes = 0, 1.0, 1.0, 0

  def log_ratio(n):
    return np.log1p((n - q + (0.5 if n == 0 else 0.0)) / q)

  i, last, n_last = 0, candidate, 0
  while n_lo != q and hi - lo > 1:
    candidate = min(max(candidate, lo + 1), hi - 1)
    n = count(candidate)
    passes, i = passes + 1, i + 1
    slope = keys_per_efold / tail_exponent
    rise = log_ratio(n_last) - log_ratio(n)
    if i > 1 and rise != 0:
      slope = min(max(abs((candidate - last) / rise), slope / 8), slope * 4)
    last, n_last = candidate, n
    if n >= q:
      lo, n_lo = candidate, n
      w_hi, w_lo, kept = (w_hi / 2 if kept == 1 else w_hi), 1.0, 1
    else:
      hi, n_hi = candidate, n
      w_lo, w_hi, kept = (w_lo / 2 if kept == -1 else w_lo), 1.0, -1
    width, half = hi - lo, (hi - lo) // 2
    step = candidate - lo + log_ratio(n) * slope
    step = half if step >= width else max(step, 1)
    f_lo, f_hi = log_ratio(n_lo) * w_lo, -log_ratio(n_hi) * w_hi
    offset = step if lo == floor or hi == _TOP else f_lo / (f_lo + f_hi) * width
    offset = half if i >= interpolation_passes else offset
    candidate = lo + int(min(max(offset, 1), width))
  if lo == floor:  # the answer is below the smallest normal number
    key, more = bisect_passes(keys, q)
    return key, passes + more
  if n_lo == q:
    return int(keys[keys >= lo].min()), passes + 1
  return lo, passes


def main():
  # pylint: disable=import-outside-toplevel
  import flax.nnx as nnx
  import jax
  import jax.numpy as jnp

  from benchmarks.speed import search_kernels
  from examples.paper import checkpoints
  from examples.paper import input_pipeline
  from examples.paper import train
  from examples.paper.configs import lenet300_fmnist
  import gsm_optax

  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument('--steps', type=int, default=120)
  parser.add_argument('--dense', default='runs/benchmarks/lenet300/s0/gsm_r60')
  parser.add_argument('--ratios', default='10,60,300')
  args = parser.parse_args()
  config = lenet300_fmnist.get_config()
  model = checkpoints.Snapshots(args.dense).load('dense', config)
  images, labels = input_pipeline.load_idx(
      '/usr/share/datasets/fashion-mnist', 'train')
  optimizer = nnx.Optimizer(
      model, gsm_optax.gsm(3e-2, 60.0, momentum=0.99, weight_decay=5e-4,
                           nesterov=True), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, x, y):
    grads = nnx.grad(lambda m: train.loss_fn(m, x, y)[0])(model)
    optimizer.update(model, grads)
    return grads

  ratios = [float(r) for r in args.ratios.split(',')]
  rng = np.random.default_rng(0)
  previous, moves = None, []
  q60 = sum(w.size for w in jax.tree.leaves(nnx.state(model, nnx.Param))
            if w.ndim >= 2) // 60
  searches = {m: jax.jit(lambda s, g, m=m: gsm_optax.global_threshold(
      s, q60, m, guess=g)) for m in ('interpolate', 'bisect')}
  seconds = {m: [] for m in (*searches, WARM)}
  passes = {(r, m): [] for r in ratios for m in ('bisect', 'interpolate', WARM)}
  last_key = {}  # per ratio: the previous step's answer
  for step_index in range(args.steps):
    batch = rng.choice(len(images), config.batch_size, replace=False)
    kernels = [np.asarray(w, np.float32) for w in
               jax.tree.leaves(nnx.state(model, nnx.Param)) if w.ndim >= 2]
    grads = step(model, optimizer,
                 train.preprocess(jnp.asarray(images[batch]), config),
                 jnp.asarray(labels[batch]))
    leaves = [np.abs(np.asarray(g, np.float32) * w) for g, w in
              zip([g for g in jax.tree.leaves(grads) if g.ndim >= 2], kernels)]
    scores = np.concatenate([t.ravel() for t in leaves])
    if step_index % 10 == 0 and previous is not None:
      for method, search in searches.items():
        seconds[method].append(search_kernels.median_us(
            search, [jnp.asarray(t) for t in leaves], None, repeats=20))
      seconds[WARM].append(search_kernels.median_us(
          searches['interpolate'], [jnp.asarray(t) for t in leaves],
          jnp.float32(previous), repeats=20))
    keys = scores.view(np.int32)
    descending = np.sort(keys)[::-1]
    for ratio in ratios:
      q = int(scores.size // ratio)
      for method, search in (('bisect', bisect_passes),
                             ('interpolate', interpolate_passes),
                             (WARM, functools.partial(
                                 interpolate_passes,
                                 start=last_key.get(ratio)))):
        key, n = search(keys, q)
        assert key == descending[q - 1], (method, ratio)
        if method != WARM or ratio in last_key:
          passes[ratio, method].append(n)
      last_key[ratio] = int(descending[q - 1])
    threshold = descending[scores.size // 60 - 1].view(np.float32)
    if previous is not None:
      moves.append(abs(threshold / previous - 1))
    previous = threshold
  print(f'{args.steps} GSM steps of LeNet-300-100 at 60x from {args.dense}')
  print(f'threshold move between steps: median {np.median(moves):.1%}, '
        f'90th percentile {np.percentile(moves, 90):.1%}')
  print('passes over all scores (mean, max), Q = N / ratio:')
  for (ratio, method), n in passes.items():
    print(f'  {ratio:g}x {method:<32} {np.mean(n):5.1f} {max(n):3d}')
  print(f'search time at 60x on {len(seconds["bisect"])} steps '
        f'({jax.devices()[0].device_kind}): median (min-max) over steps')
  for method, t in seconds.items():
    t = np.array(t)
    print(f'  {method:<32} {np.median(t):6.0f} us ({t.min():.0f}-'
          f'{t.max():.0f})')


if __name__ == '__main__':
  main()
