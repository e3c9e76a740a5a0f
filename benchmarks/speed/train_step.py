"""Training-step time (forward, backward, update): GSM vs dense momentum SGD.

Usage: python -m benchmarks.speed.train_step [--repeats 100] [--dense-steps 235]
           [--pruning-steps 0] [--methods interpolate,bisect] [--json out.json]

The jitted step of the examples (`examples.paper.train.make_train_step`), batch
256 of Fashion-MNIST, for LeNet-300-100 (GSM at 60x) and LeNet-5 (125x).
Both optimizers start where the benchmark's pruning phase starts: from a
model trained dense for ``--dense-steps`` steps (default one epoch), with
the pruning phase's settings (``config.gsm``). SGD is the same chain
without GSM's mask (`examples.paper.phases.sgd_with_decay`). Each timed step takes
a new batch and both states move on, alternating GSM and SGD on the same
batches, so the scores GSM ranks are those of real training, where the
pruning phase starts, or with ``--pruning-steps`` that many steps into it
(untimed steps of every optimizer; 468 passes the learning-rate warm-up
of one epoch and reaches the peak rate, where the threshold moves more
from step to step). (Until 2026-11-22 this benchmark repeated one random
batch from a fresh model; at commit 176f1cd that gave 1.46x after 30
repeats and 1.42x after 200 for LeNet-300, close to this benchmark's
bisect column.)
GSM runs once per selection route in ``--methods``, all in the same
rotation. The table shows medians of the timed steps and their ratios.

``--structured R`` adds structured GSM (whole channels, `find_groups`) to
1/R of the FLOPs to the rotation, with the same settings.

``--parts`` adds two steps to the rotation that split GSM's overhead:
``mask`` scores |g * w| and masks the gradient at a fixed threshold (no
search), and ``search`` scores and runs the default search but keeps only
its result in the state, so the update does not wait for it.
"""

import argparse
import importlib
import json

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples.paper import input_pipeline
from examples.paper import models
from examples.paper import phases
from examples.paper import timing
from examples.paper import train
import gsm_optax

CASES = (('lenet300', 'lenet300_fmnist', 60.0),
         ('lenet5', 'lenet5_fmnist', 125.0))


def make_step(config, tx, params=None):
  """A donated train step and its state, from ``params`` if given."""
  model = models.create_model(config.model, config.num_classes, config.seed)
  if params is not None:  # a copy: the step donates its state
    nnx.update(model, jax.tree.map(jnp.copy, params))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  return train.make_train_step(graphdef, config), (graphdef, state)


def fixed_threshold_mask(threshold: float, ratio: float | None = None
                         ) -> optax.GradientTransformation:
  """GSM's mask without its search, or (with ``ratio``) its search without
  the mask: for ``--parts``. Both rank GSM's default prunable leaves. The
  state is GSM's `KeepTopTaylorState`; with ``ratio`` it holds the
  search's result for Q = N / ratio, and the updates pass unchanged."""

  def init_fn(params):
    del params
    return gsm_optax.KeepTopTaylorState(jnp.zeros((), jnp.float32),
                                        jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params):
    leaves, treedef = jax.tree.flatten(params)
    grads = treedef.flatten_up_to(updates)
    flags = jax.tree.leaves(gsm_optax.default_prunable(params))
    chosen = [i for i, f in enumerate(flags) if f]
    scores = gsm_optax.taylor_scores([grads[i] for i in chosen],
                                     [leaves[i] for i in chosen])
    if ratio is not None:  # GSM's search, from the last step's threshold
      key, n = gsm_optax.global_threshold(
          scores, int(sum(t.size for t in scores) // ratio),
          guess=state.threshold)
      return updates, gsm_optax.KeepTopTaylorState(
          gsm_optax.key_to_score(key, jnp.float32), n.astype(jnp.int32))
    for i, t in zip(chosen, scores):
      grads[i] = jnp.where(t >= threshold, grads[i], 0.0)
    return jax.tree.unflatten(treedef, grads), state

  return optax.GradientTransformation(init_fn, update_fn)


def _parts(config, steps_per_epoch):
  # GSM is this mask followed by the SGD baseline's chain (decay, momentum,
  # learning rate), so each part is one of the two halves of the mask
  # before that same chain.
  def sgd():
    return phases.sgd_with_decay(config.gsm, steps_per_epoch)
  return {'mask': optax.chain(fixed_threshold_mask(1e-7), sgd()),
          'search': optax.chain(fixed_threshold_mask(0.0, config.ratio),
                                sgd())}


def batches(images, labels, batch_size, seed):
  """Endless shuffled batches of the training set."""
  rng = np.random.default_rng(seed)
  while True:
    order = rng.permutation(len(images))
    for i in range(0, len(order) - batch_size + 1, batch_size):
      idx = np.sort(order[i:i + batch_size])
      yield images[idx], labels[idx]


def time_case(config, repeats, dense_steps, methods, parts=False,
              pruning_steps=0, structured=None):
  """Median seconds of the SGD step and of GSM's per route (and with
  ``parts`` of the two partial steps), after a dense start: ``{'sgd': s,
  'interpolate': s, ...}``."""
  images, labels = input_pipeline.load_split(config, 'train')
  steps_per_epoch = len(images) // config.batch_size
  data = batches(images, labels, config.batch_size, seed=0)
  key = jax.random.key(0)
  step, (graphdef, state) = make_step(
      config, phases.sgd_with_decay(config.dense, steps_per_epoch))
  for _ in range(dense_steps):
    state, _ = step(state, *next(data), key)
  model, _ = nnx.merge(graphdef, state)
  dense = nnx.state(model, nnx.Param)
  runs = {'sgd': make_step(config, phases.sgd_with_decay(
      config.gsm, steps_per_epoch), dense)}
  for method in methods:
    config.method = method
    runs[method] = make_step(config, phases.gsm_with_ratio_warmup(
        config, steps_per_epoch), dense)
  if parts:
    for name, tx in _parts(config, steps_per_epoch).items():
      runs[name] = make_step(config, tx, dense)
  if structured:
    by_channels = config.copy_and_resolve_references()
    by_channels.structure, by_channels.budget = 'channels', 'flops'
    by_channels.ratio = structured
    runs['structured'] = make_step(by_channels, phases.gsm_with_ratio_warmup(
        by_channels, steps_per_epoch), dense)
  states = {name: s for name, (_, (_, s)) in runs.items()}

  def call(name):
    def run(x, y):  # the state moves on from step to step
      states[name], metrics = runs[name][0](states[name], x, y, key)
      return metrics['loss']
    return run
  # Every step sees the same batches in the same order (one stream each,
  # from the same seed, after the dense start's).
  streams = {name: batches(images, labels, config.batch_size, seed=0)
             for name in runs}
  for stream in streams.values():
    for _ in range(dense_steps):
      next(stream)
  return timing.median_seconds(
      {name: call(name) for name in runs}, repeats,
      warmup=pruning_steps + 3,  # the first calls compile
      setup={name: stream.__next__ for name, stream in streams.items()})


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--repeats', type=int, default=100)
  parser.add_argument('--dense-steps', type=int, default=235)
  parser.add_argument('--pruning-steps', type=int, default=0)
  parser.add_argument('--models', default='lenet300,lenet5')
  parser.add_argument('--methods', default='interpolate,bisect')
  parser.add_argument('--parts', action='store_true')
  parser.add_argument('--structured', type=float, default=None,
                      help='also structured GSM to 1/R of the FLOPs')
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  methods = args.methods.split(',')
  columns = methods + (['mask', 'search'] if args.parts else []) + (
      ['structured'] if args.structured else [])
  rows = []
  print(f'jax {jax.__version__}, {jax.devices()[0].device_kind}, batch 256, '
        f'{args.dense_steps} dense steps, {args.pruning_steps} untimed '
        f'pruning steps, {args.repeats} timed steps')
  print(f"{'model':<10} {'ratio':>6} {'sgd step':>10} " + ' '.join(
      f'{m + " / sgd":>17}' for m in columns))
  for name, config_name, ratio in CASES:
    if name not in args.models.split(','):
      continue
    config = importlib.import_module(
        f'examples.paper.configs.{config_name}').get_config()
    config.ratio = ratio
    config.gsm.track_churn = False  # the paper's step, as in the results
    seconds = time_case(config, args.repeats, args.dense_steps, methods,
                        args.parts, args.pruning_steps, args.structured)
    print(f"{name:<10} {ratio:>5g}x {seconds['sgd'] * 1e3:>8.2f}ms " +
          ' '.join(f"{seconds[m] / seconds['sgd']:>16.3f}x" for m in columns),
          flush=True)
    rows.append({'model': name, 'ratio': ratio, 'seconds': seconds,
                 'repeats': args.repeats, 'dense_steps': args.dense_steps,
                 'pruning_steps': args.pruning_steps})
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'jax': jax.__version__, 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  main()
