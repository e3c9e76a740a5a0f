"""Per-epoch statistics of a GSM run on LeNet-5 (a diagnostic).

Usage:
  python -m research.lenet5_divergence.divergence --ratio 10 [--epochs 12] [--seed 0]
      [--dense runs/benchmarks/lenet5/s0/gsm_r10] [--unranked fc2]
      [--weight-decay 5e-4] [--freeze-biases] [--json out.json]
  python -m research.lenet5_divergence.divergence --gradient-share [--ratios 10,30,125]

Trains GSM on Fashion-MNIST with the LeNet-5 benchmark's pruning-phase
settings (`benchmarks.accuracy.plan.FULL`, lr 3e-2, momentum 0.99 Nesterov, weight
decay 5e-4, 16-epoch schedule) from the dense model of a benchmark run and,
after each epoch, prints: the mean and largest training loss of the epoch;
the fc1 units that are dead (0 on each of the first 10,000 training images,
`research.lenet5_divergence.dead_units`); and per kernel the share of the epoch's active
weights (|g*w| at or above the step's threshold, averaged over the epoch),
the largest |w|, and the root mean square of the weights and of the
momentum. It stops after a non-finite loss. ``--unranked`` names kernels
left out of GSM's ranking (they take the full gradient and keep the weight
decay; Q = N / ratio over the ranked kernels only), ``--weight-decay``
replaces the schedule's decay and ``--freeze-biases`` keeps every bias at
its dense value: interventions.

``--gradient-share`` trains nothing: on 10 batches at the dense model it
prints, per ratio, the share of the kernels' squared gradient norm that
reaches the Q weights GSM would make active (largest |g * w|), and the
share that a mask of the Q largest |w| would pass.
"""

import argparse
import itertools
import json

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.accuracy import plan
from benchmarks.speed import train_step
from examples.paper import checkpoints
from examples.paper import input_pipeline
from examples.paper import phases
from examples.paper import train
import gsm_optax
from research.lenet5_divergence import dead_units

KERNELS = ('conv1', 'conv2', 'fc1', 'fc2')


def batch_loss(graphdef, config):
  """``loss(params, images, labels)``: the examples' training loss."""
  return lambda p, x, y: train.loss_fn(nnx.merge(graphdef, p),
                                       train.preprocess(x, config), y)[0]


def make_step(graphdef, tx, config):
  """A jitted GSM step that also returns the active weights per kernel."""
  loss = batch_loss(graphdef, config)

  @jax.jit
  def step(params, opt_state, images, labels):
    value, grads = jax.value_and_grad(loss)(params, images, labels)
    updates, opt_state = tx.update(grads, opt_state, params)
    threshold = gsm_optax.find_mask_state(opt_state).threshold
    active = {k: jnp.sum(jnp.abs(grads[k]['kernel'][...] *
                                 params[k]['kernel'][...]) >= threshold)
              for k in KERNELS}
    return optax.apply_updates(params, updates), opt_state, value, active

  return step


def make_tx(config, steps_per_epoch, unranked=(), freeze_biases=False):
  """The run's GSM; kernels in ``unranked`` are left out of the ranking;
  with ``freeze_biases`` no 1-d leaf moves."""
  tx = _gsm(config, steps_per_epoch, unranked)
  if freeze_biases:
    tx = optax.chain(tx, optax.masked(
        optax.set_to_zero(), lambda p: jax.tree.map(lambda w: w.ndim == 1, p)))
  return tx


def _gsm(config, steps_per_epoch, unranked):
  if not unranked:
    return phases.gsm_with_ratio_warmup(config, steps_per_epoch)
  g = config.gsm
  return gsm_optax.gsm(
      phases.learning_rate_schedule(g, steps_per_epoch), config.ratio,
      momentum=g.momentum, weight_decay=g.weight_decay, nesterov=g.nesterov,
      prunable=lambda p: jax.tree_util.tree_map_with_path(
          lambda path, w: w.ndim >= 2 and jax.tree_util.keystr(
              path[:1], simple=True) not in unranked, p),
      weight_decay_mask=gsm_optax.default_prunable)


def gradient_shares(grads, weights, q):
  """Shares of ``sum(g**2)`` on the Q largest |g * w| and the Q largest |w|.

  Args:
    grads, weights: flat arrays of one step's kernel gradients and weights.
    q: how many weights a mask keeps.

  Returns:
    ``(share through GSM's mask, share through a magnitude mask)``.
  """
  total = np.sum(np.square(grads, dtype=np.float64))
  shares = []
  for score in (np.abs(grads * weights), np.abs(weights)):
    top = np.argpartition(-score, q - 1)[:q]
    shares.append(float(np.sum(np.square(grads[top], dtype=np.float64)) /
                        total))
  return tuple(shares)


def print_gradient_shares(graphdef, params, data, config, ratios, n=10):
  grad = jax.jit(jax.grad(batch_loss(graphdef, config)))
  shares = {r: [] for r in ratios}
  for x, y in itertools.islice(data, n):
    g = grad(params, jnp.asarray(x), jnp.asarray(y))
    flat = [np.concatenate([np.asarray(tree[k]['kernel'][...]).ravel()
                            for k in KERNELS]) for tree in (g, params)]
    for r in ratios:
      shares[r].append(gradient_shares(*flat, int(flat[0].size // r)))
  for r, v in shares.items():
    v = np.mean(v, axis=0)
    print(f'{r:g}x: share of the squared gradient norm on the Q largest '
          f'|g*w| {v[0]:.3f}, on the Q largest |w| {v[1]:.3f} (mean of {n} '
          'batches at the dense model)')


def layer_stats(params, opt_state):
  momentum = optax.tree_utils.tree_get(opt_state, 'trace')
  out = {}
  for k in KERNELS:
    w = np.asarray(params[k]['kernel'][...])
    z = np.asarray(momentum[k]['kernel'][...])
    out[k] = {'max_abs_w': float(np.abs(w).max()),
              'rms_w': float(np.sqrt(np.mean(w**2))),
              'rms_momentum': float(np.sqrt(np.mean(z**2)))}
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument('--ratio', type=float, default=10.0)
  parser.add_argument('--epochs', type=int, default=12)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--dense', default='runs/benchmarks/lenet5/s0/gsm_r10')
  parser.add_argument('--unranked', default='')
  parser.add_argument('--weight-decay', type=float, default=None)
  parser.add_argument('--freeze-biases', action='store_true')
  parser.add_argument('--json', default=None)
  parser.add_argument('--gradient-share', action='store_true')
  parser.add_argument('--ratios', default='10,30,125')
  args = parser.parse_args()
  unranked = [k for k in args.unranked.split(',') if k]
  config = plan.make_config('lenet5', plan.FULL['lenet5'], 'gsm', args.ratio,
                           args.seed, args.dense, None, lottery=False)
  if args.weight_decay is not None:
    config.gsm.weight_decay = args.weight_decay
  images, labels = input_pipeline.load_idx(dead_units.DATA_DIR, 'train')
  steps_per_epoch = len(images) // config.batch_size
  model = checkpoints.Snapshots(args.dense).load('dense', config)
  graphdef, params = nnx.split(model)
  if args.gradient_share:
    print_gradient_shares(
        graphdef, params,
        train_step.batches(images, labels, config.batch_size, args.seed),
        config, [float(r) for r in args.ratios.split(',')])
    return
  tx = make_tx(config, steps_per_epoch, unranked, args.freeze_biases)
  opt_state = tx.init(params)
  step = make_step(graphdef, tx, config)
  data = train_step.batches(images, labels, config.batch_size, args.seed)
  q = sum(np.asarray(params[k]['kernel'][...]).size for k in KERNELS
          if k not in unranked)
  q = int(q // args.ratio)
  rows = []
  for epoch in range(1, args.epochs + 1):
    losses, active = [], {k: 0 for k in KERNELS}
    for x, y in itertools.islice(data, steps_per_epoch):
      params, opt_state, value, counts = step(
          params, opt_state, jnp.asarray(x), jnp.asarray(y))
      losses.append(float(value))
      for k in KERNELS:
        active[k] += int(counts[k])
    finite = bool(np.all(np.isfinite(losses)))
    row = {'epoch': epoch, 'mean_loss': float(np.mean(losses)),
           'max_loss': float(np.max(losses)),
           'dead_fc1_units': dead_units.dead_units(
               nnx.merge(graphdef, params), images[:10_000], config),
           'active_share': {k: active[k] / steps_per_epoch / q
                            for k in KERNELS},
           'layers': layer_stats(params, opt_state)}
    rows.append(row)
    print(f"epoch {epoch:2d} loss {row['mean_loss']:.3f} (max "
          f"{row['max_loss']:.3f}) dead fc1 {row['dead_fc1_units']:3d}  " +
          '  '.join(f"{k}: {row['active_share'][k]:.1%} of active, max|w| "
                    f"{row['layers'][k]['max_abs_w']:.3f}, rms z "
                    f"{row['layers'][k]['rms_momentum']:.2e}"
                    for k in KERNELS), flush=True)
    if not finite:
      break
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'ratio': args.ratio, 'seed': args.seed, 'dense': args.dense,
                 'unranked': unranked,
                 'weight_decay': config.gsm.weight_decay,
                 'freeze_biases': args.freeze_biases, 'rows': rows}, f,
                indent=1)


if __name__ == '__main__':
  main()
