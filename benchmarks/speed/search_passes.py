"""Counting passes of the exact threshold search on real GSM steps.

Usage:
  python -m benchmarks.speed.search_passes [--steps 120]
      [--dense runs/benchmarks/lenet300/s0/gsm_r60]

Trains LeNet-300-100 with GSM (60x, lr 3e-2 held constant, momentum 0.99
Nesterov, weight decay 5e-4, batch 256 of Fashion-MNIST) for ``--steps``
steps from the dense model saved by a run of the paper harness with the
``lenet300_fmnist`` config (``python -m benchmarks.accuracy.run --part
comparison --models lenet300 --seeds 0 --ratios 10`` trains it; any
workdir of that config holding a 'dense' snapshot will do). On each step's
scores |g * w| it runs gsm_optax's own searches (`select_top_q`, jitted,
the kernels' scores as `keep_top_taylor` passes them) for Q = N / ratio at
each of ``--ratios``, checks each answer against NumPy's sort, and reads
the passes over all scores that the search reports (`TopQ.passes`: every
count, the mean, the minimum):

* ``bisect``: ``method='bisect'``;
* ``interpolate``: ``method='interpolate'`` from the mean
  score (GSM's first step);
* ``interpolate from last threshold``: from the previous step's Q-th
  largest score, what `keep_top_taylor` does from its second step on;
* ``radix``: ``method='radix'`` as it runs at this size (3 passes);
* ``radix, sampled``: the sampled radix route (`native_radix`), which
  the CPU takes from 3 * 2**21 scores on, forced at LeNet-300's size here (its
  sample is then 1 score in 8): 1 pass where the window it places holds
  the answer, 3 where it does not. Where the kernel is not built, this row
  repeats ``radix``'s.

It also prints how far the Q-th largest score moves between steps at 60x,
and times the two searches (jitted ``global_threshold`` at Q = N / 60) and
the default one started from the previous step's threshold, on every 10th
step from the 10th: medians of 20 calls per step, then the median and
range over those steps. (Until 2026-12-02 the passes came from NumPy
re-statements of the searches, which did not count the mean's pass.)
"""

import argparse
from unittest import mock

import numpy as np

WARM = 'interpolate from last threshold'
SAMPLED = 'radix, sampled'


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
  from gsm_optax._src.selection import native_radix
  from gsm_optax._src.selection import search as search_lib

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
  passes = {(r, m): [] for r in ratios
            for m in ('bisect', 'interpolate', WARM, 'radix', SAMPLED)}
  last_value = {}  # per ratio: the previous step's answer
  selects = {m: jax.jit(lambda s, q, g, m=m: search_lib.select_top_q(
      s, q, m, guess=g)) for m in ('bisect', 'interpolate', 'radix')}
  # The route is chosen when the search is traced: trace it once forced.
  sampled = jax.jit(lambda s, q: search_lib.select_top_q(s, q, 'radix'))
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
    descending = np.sort(scores.view(np.int32))[::-1]
    device_leaves = [jnp.asarray(t) for t in leaves]
    for ratio in ratios:
      q = int(scores.size // ratio)
      runs = [('bisect', 'bisect', None), ('interpolate', 'interpolate', None),
              ('radix', 'radix', None)]
      if ratio in last_value:
        runs.append((WARM, 'interpolate', last_value[ratio]))
      tops = {name: selects[method](device_leaves, q, guess)
              for name, method, guess in runs}
      with mock.patch.object(native_radix, 'SAMPLED_FROM', 0):
        tops[SAMPLED] = sampled(device_leaves, q)
      for name, top in tops.items():
        assert int(top.threshold_key) == descending[q - 1], (name, ratio)
        passes[ratio, name].append(int(top.passes))
      last_value[ratio] = jnp.float32(descending[q - 1].view(np.float32))
    threshold = descending[scores.size // 60 - 1].view(np.float32)
    if previous is not None:
      moves.append(abs(threshold / previous - 1))
    previous = threshold
  print(f'{args.steps} GSM steps of LeNet-300-100 at 60x from {args.dense}')
  print(f'threshold move between steps: median {np.median(moves):.1%}, '
        f'90th percentile {np.percentile(moves, 90):.1%}')
  print('passes over all scores (mean, max; share of steps with 1), '
        'Q = N / ratio:')
  for (ratio, method), n in passes.items():
    print(f'  {ratio:g}x {method:<32} {np.mean(n):5.1f} {max(n):3d} '
          f'{np.mean(np.array(n) == 1):6.1%}')
  print(f'search time at 60x on {len(seconds["bisect"])} steps '
        f'({jax.devices()[0].device_kind}): median (min-max) over steps')
  for method, t in seconds.items():
    t = np.array(t)
    print(f'  {method:<32} {np.median(t):6.0f} us ({t.min():.0f}-'
          f'{t.max():.0f})')


if __name__ == '__main__':
  main()
