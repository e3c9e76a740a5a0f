"""Median time of one jitted GSM step relative to one optax.sgd step.

Usage: python -m benchmarks.speed.step_overhead [--repeats 15] [--json out.json]

Both steps run on the same tree in the same process, alternated, after
compilation (`examples.paper.timing`);
the table shows ratios (GSM / SGD) per selection route. Every timed call
donates fresh copies of the same parameters and state (copied before the
clock starts) and takes the same gradients (random values), so every GSM
call ranks the same scores: GSM's first step, or with ``--later`` a later
one, from the state after one step on the same gradients (the search of
``interpolate`` then starts at this step's threshold: its best case).
(Until 2026-11-22 the timed steps were chained on one fixed random
gradient: after tens of such steps the scores drifted into shapes that slow
``interpolate``, and with 100 repeats it was slower than ``bisect``.)
"""

import argparse
import json
import platform

import jax
import jax.numpy as jnp
import optax

from benchmarks.speed import trees
from examples.paper import timing
import gsm_optax


def time_steps(steps, grads, repeats):
  """Median seconds of each donating step, the steps alternated, every call
  on fresh copies of its own params and state (copied before the clock
  starts) and the same ``grads``; ``steps``: name -> (step, params, state).
  """
  def fresh(params, state):
    return lambda: jax.block_until_ready(
        jax.tree.map(jnp.copy, (params, state))) + (grads,)
  return timing.median_seconds(
      {name: step for name, (step, _, _) in steps.items()}, repeats,
      setup={name: fresh(p, s) for name, (_, p, s) in steps.items()})


def make_step(tx):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return jax.jit(step, donate_argnums=(0, 1))


def time_tree(shapes, ratio, repeats, methods, later=False):
  params = trees.random_tree(shapes, seed=0)
  grads = jax.tree.map(jax.numpy.asarray, trees.random_tree(shapes, seed=1))
  n_params = sum(x.size for x in jax.tree.leaves(params))
  optimizers = {'sgd': optax.sgd(0.01, momentum=0.9)}
  for m in methods:
    optimizers[m] = gsm_optax.gsm(0.01, ratio, momentum=0.9,
                                  weight_decay=1e-4, method=m)
  steps = {}
  for name, tx in optimizers.items():
    p = jax.tree.map(jax.numpy.asarray, params)
    step, state = make_step(tx), tx.init(p)
    if later:  # the state after one step: the last threshold is known
      _, state = step(jax.tree.map(jnp.copy, p), state, grads)
    steps[name] = (step, p, state)
  return n_params, time_steps(steps, grads, repeats)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--repeats', type=int, default=15)
  parser.add_argument('--ratio', type=float, default=10.0)
  parser.add_argument('--methods', default='auto,interpolate,bisect,radix,top_k')
  parser.add_argument('--later', action='store_true',
                      help='time a later step: each call starts from the '
                      'state after one step on the same gradients')
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  methods = args.methods.split(',')
  rows = []
  print(f'device: {jax.devices()[0].device_kind} x{jax.device_count()}, '
        f'jax {jax.__version__}, {platform.processor() or platform.machine()}')
  print(f"{'tree':<18} {'params':>11} {'sgd step':>10} " +
        ' '.join(f'{m + " / sgd":>14}' for m in methods))
  for name, shapes_fn in trees.TREES.items():
    n, sec = time_tree(shapes_fn(), args.ratio, args.repeats, methods,
                       args.later)
    rows.append({'tree': name, 'params': n, 'seconds': sec})
    print(f'{name:<18} {n:>11,} {sec["sgd"] * 1e3:>8.2f}ms ' +
          ' '.join(f'{sec[m] / sec["sgd"]:>13.2f}x' for m in methods),
          flush=True)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'jax': jax.__version__, 'device': jax.devices()[0].device_kind,
                 'ratio': args.ratio, 'later': args.later, 'rows': rows}, f,
                indent=1)


if __name__ == '__main__':
  main()
