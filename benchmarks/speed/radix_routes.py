"""The radix route's two CPU forms by tree size: plain passes or sampled.

Usage: python -m benchmarks.speed.radix_routes [--repeats 15]

`native_radix` counts 3 passes below `native_radix.SAMPLED_FROM` scores (in
one call of its kernel where nothing is split over devices) and samples
from there on (one pass over a window that a sample places, two more where
it misses). This times one GSM step with ``method='radix'`` in
each form, forced on every tree (the form is chosen when the step is
traced), against one ``optax.sgd(lr, momentum=0.9)`` step on the same tree
(random values, ratio 10, GSM's first step; `step_overhead.time_steps`:
alternated, donated, medians after compilation), on the ResNet-56 tree and
on single matrices of 2**20 to 2**23 weights: the sizes around the
threshold. The docs' selection page quotes a run of it.
"""

import argparse
import platform
from unittest import mock

import jax
import jax.numpy as jnp
import optax

from benchmarks.speed import step_overhead
from benchmarks.speed import trees
import gsm_optax
from gsm_optax._src.selection import native_radix

TREES = {'resnet56 (0.85M)': trees.resnet56_shapes,
         'matrix (1.0M)': lambda: {'kernel': (1024, 1024)},
         'matrix (2.1M)': lambda: {'kernel': (2048, 1024)},
         'matrix (4.2M)': lambda: {'kernel': (4096, 1024)},
         'matrix (6.3M)': lambda: {'kernel': (6144, 1024)},
         'matrix (8.4M)': lambda: {'kernel': (8192, 1024)}}
# Each form, as the SAMPLED_FROM it is traced under.
FORMS = {'plain': 2 ** 62, 'sampled': 0}


def time_forms(shapes, repeats, ratio=10.0):
  """The weights of ``shapes``, and ``{'sgd': seconds, form: seconds}`` of
  one step on them."""
  params = jax.tree.map(jnp.asarray, trees.random_tree(shapes, seed=0))
  grads = jax.tree.map(jnp.asarray, trees.random_tree(shapes, seed=1))
  sgd = optax.sgd(0.01, momentum=0.9)
  steps = {'sgd': (step_overhead.make_step(sgd), params, sgd.init(params))}
  for form, sampled_from in FORMS.items():
    tx = gsm_optax.gsm(0.01, ratio, momentum=0.9, weight_decay=1e-4,
                       method='radix')
    state = tx.init(params)
    with mock.patch.object(native_radix, 'SAMPLED_FROM', sampled_from):
      compiled = step_overhead.make_step(tx).lower(params, state,
                                                   grads).compile()
    steps[form] = (compiled, params, state)
  return (sum(x.size for x in jax.tree.leaves(params)),
          step_overhead.time_steps(steps, grads, repeats))


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--repeats', type=int, default=15)
  args = parser.parse_args()
  if not native_radix.applies([jnp.zeros(1)]):
    parser.error('the native radix kernel is not built here (no C++ '
                 'compiler, or GSM_OPTAX_NATIVE=0): nothing to compare.')
  print(f'device: {jax.devices()[0].device_kind}, jax {jax.__version__}, '
        f'{platform.processor() or platform.machine()}; GSM step, ratio 10')
  print(f"{'tree':<18} {'weights':>11} {'sgd step':>10} " +
        ' '.join(f'{f + " / sgd":>14}' for f in FORMS))
  for name, shapes_fn in TREES.items():
    n, sec = time_forms(shapes_fn(), args.repeats)
    print(f'{name:<18} {n:>11,} {sec["sgd"] * 1e3:>8.2f}ms ' +
          ' '.join(f'{sec[f] / sec["sgd"]:>13.2f}x' for f in FORMS),
          flush=True)


if __name__ == '__main__':
  main()
