"""Counting passes of the exact threshold search on real GSM steps.

Usage:
  python -m benchmarks.search_passes [--steps 120]
      [--dense runs/benchmarks/lenet300/s0/gsm_r60]

Trains LeNet-300-100 with GSM (60x, lr 3e-2 held constant, momentum 0.99
Nesterov, weight decay 5e-4, batch 256 of Fashion-MNIST) for ``--steps``
steps from the dense model saved by a benchmark run (``python -m
benchmarks.run --part comparison --models lenet300 --seeds 0 --ratios 10``
trains it). On each step's scores |g * w| it counts the passes over all
scores of two NumPy re-statements of the search:

* `bisect_passes`: gsm_optax's ``method='bisect'``, with its early stop;
* `warm_start_passes`: a safeguarded interpolation search that starts from
  the previous step's threshold (not in gsm_optax: the README says why).

It also prints how far the Q-th largest score moves between steps. The
README's numbers: 120 steps, seed 0, 2026-11-21.
"""

import argparse

import numpy as np

_TOP = 0x7f800000  # key of +inf: above every finite score


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


def warm_start_passes(keys, q, hint, first_step=2**16):
  """A bracketing search from ``hint`` (the previous threshold's key).

  It gallops from the hint (steps x4) until the Q-th largest key is
  bracketed, then interpolates the count linearly in the key (Illinois
  rule), halving the bracket whenever the count bracket did not halve; it
  stops like `bisect_passes` when exactly Q keys reach the lower end.

  Returns:
    ``(key, passes)``, as `bisect_passes`; keys must be finite scores.
  """
  count = _counter(keys)
  hint = min(max(int(hint), 1), _TOP - 1)
  n, passes = count(hint), 1
  step = first_step
  if n >= q:
    lo, n_lo = hint, n
    while True:
      c = min(lo + step, _TOP)
      n = 0 if c == _TOP else count(c)
      passes += c < _TOP
      if n < q:
        hi, n_hi = c, n
        break
      lo, n_lo, step = c, n, 4 * step
  else:
    hi, n_hi = hint, n
    while True:
      c = max(hi - step, 0)
      n = keys.size if c == 0 else count(c)
      passes += c > 0
      if n >= q:
        lo, n_lo = c, n
        break
      hi, n_hi, step = c, n, 4 * step
  side, w_lo, w_hi, bisect = 0, 1.0, 1.0, False
  while True:
    if n_lo == q:
      return int(keys[keys >= lo].min()), passes + 1
    if hi - lo == 1:
      return lo, passes
    if bisect:
      c = lo + (hi - lo) // 2
    else:
      a, b = (n_lo - q + 0.5) * w_hi, (q - 0.5 - n_hi) * w_lo
      c = lo + int(a / (a + b) * (hi - lo))
    c = min(max(c, lo + 1), hi - 1)
    n, width = count(c), n_lo - n_hi
    passes += 1
    if n >= q:
      lo, n_lo = c, n
      w_hi, w_lo, side = (w_hi / 2 if side == 1 else 1.0), 1.0, 1
    else:
      hi, n_hi = c, n
      w_lo, w_hi, side = (w_lo / 2 if side == -1 else 1.0), 1.0, -1
    bisect = not bisect and n_lo - n_hi > width / 2


def main():
  # pylint: disable=import-outside-toplevel
  import flax.nnx as nnx
  import jax
  import jax.numpy as jnp

  import gsm_optax
  from examples import input_pipeline
  from examples import train
  from examples.configs import lenet300_fmnist

  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument('--steps', type=int, default=120)
  parser.add_argument('--dense', default='runs/benchmarks/lenet300/s0/gsm_r60')
  args = parser.parse_args()
  config = lenet300_fmnist.get_config()
  model = train.Snapshots(args.dense).load('dense', config)
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

  rng = np.random.default_rng(0)
  previous, moves, cold, warm = None, [], [], []
  for _ in range(args.steps):
    batch = rng.choice(len(images), config.batch_size, replace=False)
    kernels = [np.asarray(w, np.float32) for w in
               jax.tree.leaves(nnx.state(model, nnx.Param)) if w.ndim >= 2]
    grads = step(model, optimizer,
                 train.preprocess(jnp.asarray(images[batch]), config),
                 jnp.asarray(labels[batch]))
    scores = np.concatenate([
        np.abs(np.asarray(g, np.float32) * w).ravel() for g, w in
        zip([g for g in jax.tree.leaves(grads) if g.ndim >= 2], kernels)])
    keys, q = scores.view(np.int32), scores.size // 60
    key, passes = bisect_passes(keys, q)
    assert key == np.sort(keys)[::-1][q - 1]
    cold.append(passes)
    threshold = np.array(key, np.int32).view(np.float32)
    if previous is not None:
      moves.append(abs(threshold / previous - 1))
      warm_key, passes = warm_start_passes(
          keys, q, np.array(previous, np.float32).view(np.int32))
      assert warm_key == key
      warm.append(passes)
    previous = threshold
  print(f'{args.steps} GSM steps of LeNet-300-100 at 60x from {args.dense}')
  print(f'threshold move between steps: median {np.median(moves):.1%}, '
        f'90th percentile {np.percentile(moves, 90):.1%}')
  print(f'passes: bisect (early stop) mean {np.mean(cold):.1f} (max '
        f'{max(cold)}); warm start mean {np.mean(warm):.1f} (max {max(warm)})')


if __name__ == '__main__':
  main()
