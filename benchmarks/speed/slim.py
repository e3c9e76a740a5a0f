"""The slim model of a structured prune against the dense one.

Usage: python -m benchmarks.speed.slim [--repeats 50] [--json out.json]
       [--models lenet300,lenet5] [--ratios 2,4,8]
       python -m benchmarks.speed.slim --retime benchmarks/results/accuracy
       [--batch 256] [--repeats 50]

For LeNet-300-100 and LeNet-5 (random weights: the speed does not depend on
them), the groups are found from the model's code (`gsm_optax.find_groups`)
and every layer keeps the same fraction of its channels, the largest whose
FLOPs stay within 1/2, 1/4 and 1/8 of the model's (what GSM keeps per layer
depends on the training; see the docs' results); the other channels are
zeroed and `gsm_optax.slim` cuts them out. Timed, jitted, dense
and slim alternated in one process, medians after compilation: the forward
pass at batch 1 and 256, and a training step at batch 256 (loss, gradient,
SGD update of every parameter). On a GPU (the same script; the
``platform`` field says which), the table is the same.

``--retime DIR`` times again the slim model of every structured result in
DIR at the widths that run kept (random weights again), dense and slim
forward passes alternated at ``--batch``, and records it in the result's
``slim.retimed`` (the runs time theirs at the end of training, beside
other runs; `benchmarks.accuracy.slim_report` prefers this one).
"""

import argparse
import glob
import json
import os
import platform
import time

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.accuracy import results as results_lib
from examples.paper import models
from examples.paper import timing
import gsm_optax

SHAPES = {'lenet300': (28, 28, 1), 'lenet5': (28, 28, 1)}


def random_model(name, seed=0):
  """``(forward, state)`` of the model in eval mode with random weights."""
  abstract = nnx.eval_shape(lambda: models.create_model(name, 10, seed))
  abstract.eval()
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(seed)
  state = jax.tree.map(lambda s: (0.1 * rng.normal(size=s.shape)).astype(
      s.dtype), nnx.to_pure_dict(state))
  return (lambda p, x: nnx.merge(graphdef, p)(x)), state


def active_of(groups, keeps):
  """The groups that keep the first ``keeps[i]`` channels of family i."""
  active = np.zeros(groups.num_groups, bool)
  for i, keep in enumerate(keeps):
    active[groups.offsets[i]:groups.offsets[i] + keep] = True
  return active


def uniform_widths(groups, ratio):
  """The groups that keep the same fraction of every layer, the largest
  fraction within ``1 / ratio`` of the FLOPs."""
  target = groups.totals['flops'] / ratio
  for fraction in np.linspace(1.0, 0.0, 1001):
    active = active_of(groups, [max(1, int(np.ceil(fraction * f.size)))
                                for f in groups.families])
    if float(groups.kept_cost(jnp.asarray(active), 'flops')) <= target:
      return active
  return None


def cut(forward, state, groups, active):
  """The state with only the ``active`` groups' channels (the others
  zeroed), and its slim model."""
  pruned = groups.zeroed(active, state)
  slim_state, slim_fn, info = gsm_optax.slim(forward, pruned, groups)
  return pruned, slim_state, slim_fn, info


def train_step(fn):
  """A jitted SGD step of ``fn``'s cross-entropy on a batch."""
  def step(params, x, y):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        fn(p, x), y).mean()
    grads = jax.grad(loss)(params)
    return jax.tree.map(lambda w, g: w - 1e-2 * g, params, grads)
  return jax.jit(step)


SELECTIONS = ('uniform', 'flops', 'rounded', 'latency')


def groups_for(selection, forward, state, x256, repeats):
  """The groups a selection ranks: ``'uniform'`` and ``'flops'`` channel
  by channel; ``'rounded'`` and ``'latency'`` with ``round_to=8``, the
  latter with the whole slim model's latency table measured here at batch
  256."""
  groups = gsm_optax.find_groups(forward, state, x256,
                                 round_to=1 if selection in ('uniform', 'flops')
                                 else 8)
  if selection == 'latency':
    groups = groups.with_latency(gsm_optax.measure_latency(
        groups, points=5, repeats=repeats,
        model=(forward, state, x256)))
  return groups


def widths_for(selection, groups, state, ratio):
  """The groups a selection keeps at ``ratio``: ``'uniform'`` the same
  fraction of every layer within the FLOPs budget; else what
  `gsm_optax.prune` keeps by group magnitude (random weights: the widths
  any trained run could end at) under the FLOPs budget (``'flops'``,
  ``'rounded'``) or the latency budget (``'latency'``: ``ratio`` divides
  the measured time, not the FLOPs)."""
  if selection == 'uniform':
    return uniform_widths(groups, ratio)
  budget = 'latency' if selection == 'latency' else 'flops'
  # what gsm_optax.prune(state, ratio, groups=groups, budget=budget) keeps
  return np.asarray(groups.select(groups.magnitudes(state), ratio,
                                  budget).active)


def measure(name, ratios, repeats, selection='uniform'):
  forward, state = random_model(name)
  x1 = jnp.ones((1,) + SHAPES[name])
  x256 = jax.random.normal(jax.random.key(0), (256,) + SHAPES[name])
  y256 = jnp.arange(256) % 10
  rows = []
  groups = groups_for(selection, forward, state, x256, repeats)
  for ratio in ratios:
    try:
      active = widths_for(selection, groups, state, ratio)
    except ValueError as e:  # a budget the model cannot reach
      print(f'| {name} | {selection} {ratio:g}× | not reachable: {e} |',
            flush=True)
      continue
    pruned, slim_state, slim_fn, info = cut(forward, state, groups, active)
    dense_fwd, slim_fwd = jax.jit(forward), jax.jit(slim_fn)
    dense_step, slim_step = train_step(forward), train_step(slim_fn)
    np.testing.assert_allclose(slim_fwd(slim_state, x256),
                               dense_fwd(pruned, x256), atol=1e-4, rtol=1e-4)
    seconds = timing.median_seconds({
        'dense_1': lambda: dense_fwd(pruned, x1),
        'slim_1': lambda: slim_fwd(slim_state, x1),
        'dense_256': lambda: dense_fwd(pruned, x256),
        'slim_256': lambda: slim_fwd(slim_state, x256),
        'dense_step': lambda: dense_step(pruned, x256, y256),
        'slim_step': lambda: slim_step(slim_state, x256, y256)}, repeats)
    rows.append({
        'model': name, 'selection': selection, 'budget_ratio': ratio,
        'flops_ratio': info.flops[0] / info.flops[1],
        'flops': list(info.flops), 'params': list(info.params),
        'channels': [list(c) for c in info.channels],
        'seconds': seconds,
        'speedup': {k: seconds[f'dense_{k}'] / seconds[f'slim_{k}']
                    for k in ('1', '256', 'step')}})
    print(table_line(rows[-1]), flush=True)
  return rows


def retime(results_dir, batch, repeats, missing_only=False):
  """Times each structured result's slim model again at its widths and
  writes it into the result (``slim.retimed``); with ``missing_only``, only
  those not timed again yet (runs trained since). Returns how many."""
  models, count = {}, 0
  for path in sorted(glob.glob(os.path.join(results_dir, '*.json'))):
    with open(path) as f:
      result = json.load(f)
    if not result.get('slim') or result.get('diverged') or (
        missing_only and 'retimed' in result['slim']):
      continue
    name = result['model']
    if name not in models:
      forward, state = random_model(name)
      groups = gsm_optax.find_groups(forward, state,
                                     jnp.ones((1,) + SHAPES[name]))
      models[name] = forward, state, groups
    forward, state, groups = models[name]
    channels = result['slim']['channels']
    if [c[0] for c in channels] != [f.name for f in groups.families]:
      raise ValueError(f'{path}: its slim channels {[c[0] for c in channels]}'
                       ' are not the families of the model\'s groups '
                       f'{[f.name for f in groups.families]}; was it trained '
                       'with another model definition?')
    pruned, slim_state, slim_fn, info = cut(
        forward, state, groups, active_of(groups, [c[2] for c in channels]))
    assert [list(c) for c in info.channels] == channels, (path, info.channels)
    x = jax.random.normal(jax.random.key(0), (batch,) + SHAPES[name])
    dense_fwd, slim_fwd = jax.jit(forward), jax.jit(slim_fn)
    seconds = timing.median_seconds({
        'dense': lambda: dense_fwd(pruned, x),
        'slim': lambda: slim_fwd(slim_state, x)}, repeats)
    result['slim']['retimed'] = {
        'batch': batch, 'repeats': repeats, 'dense_seconds': seconds['dense'],
        'slim_seconds': seconds['slim'],
        'speedup': seconds['dense'] / seconds['slim'],
        'date': time.strftime('%Y-%m-%d'), 'jax': jax.__version__,
        'machine': f'{os.cpu_count()}-core {platform.processor() or platform.machine()}'}
    results_lib.write_result(path, result)
    count += 1
    print(f"{os.path.basename(path)}: {result['slim']['retimed']['speedup']:.2f}x",
          flush=True)
  return count


def table_line(row):
  (fb, fa), (pb, pa) = row['flops'], row['params']
  widths = ', '.join(f'{n}/{s}' for _, s, n in row['channels'])
  s = row['speedup']
  return (f"| {row['model']} | {row['selection']} {row['budget_ratio']:g}× | {fb / fa:.2f}× | "
          f"{pb / pa:.2f}× | {widths} | {s['1']:.2f}× | {s['256']:.2f}× | "
          f"{s['step']:.2f}× |")


TABLE_HEADER = ('| model | widths, budget | FLOPs fewer | params fewer | widths kept | '
                'speed-up, batch 1 | batch 256 | training step, 256 |\n'
                '|---|---:|---:|---:|---|---:|---:|---:|')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default='lenet300,lenet5')
  parser.add_argument('--ratios', default='2,4,8')
  parser.add_argument('--repeats', type=int, default=50)
  parser.add_argument('--json', default=None)
  parser.add_argument('--select', default='uniform',
                      help='comma-separated, of ' + ', '.join(SELECTIONS) +
                      ' (see widths_for)')
  parser.add_argument('--retime', default=None, metavar='RESULTS_DIR',
                      help='time the slim model of each structured result '
                      'here again, and record it in the result')
  parser.add_argument('--batch', type=int, default=256,
                      help='the batch of --retime')
  parser.add_argument('--missing', action='store_true',
                      help='with --retime: only the results not timed again '
                      'yet')
  args = parser.parse_args()
  if args.retime:
    if not retime(args.retime, args.batch, args.repeats, args.missing):
      parser.error(f'--retime: no structured result in {args.retime}'
                   + (' left to time again.' if args.missing else '.'))
    return
  print(TABLE_HEADER)
  selections = args.select.split(',')
  unknown = sorted(set(selections) - set(SELECTIONS))
  if unknown:
    parser.error(f'--select: {unknown} not among {SELECTIONS}')
  rows = [r for name in args.models.split(',') for selection in selections
          for r in measure(name, [float(r) for r in args.ratios.split(',')],
                           args.repeats, selection)]
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, 'w') as f:
      json.dump({'platform': jax.default_backend(),
                 'machine': platform.processor() or platform.machine(),
                 'jax': jax.__version__, 'repeats': args.repeats,
                 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  main()
