"""GSM with AdamW on a small transformer: does the final prune stay free?

Usage:
  python -m benchmarks.accuracy.transformer_adamw [--seeds 0,1,2] [--ratio 10]
      [--json benchmarks/results/transformer_adamw.json]

The task is synthetic and needs attention: reverse a sequence of 16 random
tokens (token accuracy on fresh sequences). `TinyTransformer` (2 pre-norm
blocks, 4 heads, width 64; its kernels and embeddings are ranked) trains
dense with AdamW, then each method prunes it to ``ratio`` with AdamW and
the same steps and schedule, from the same dense model:

* ``mask_then_adamw``: `keep_top_taylor` chained before AdamW. Passive
  weights get no gradient, so only AdamW's ``lr * weight_decay`` shrinks
  them: what a user tries first.
* ``global_sparse``: `global_sparse(adamw, ratio, passive_decay=rho)`, the
  passive weights shrunk by ``rho`` a step whatever the optimizer.
* ``global_sparse_smoothed``: the same with ``score_decay=0.99``.
* ``gradual_magnitude``: AdamW, then Zhu & Gupta's cubic schedule
  (`gradual_magnitude_pruning`, global ranking, final sparsity at 3/4).

Every method ends with `gsm_optax.prune` at ``ratio`` and no fine-tuning.
"""

import argparse
import json
import os
import statistics
import time

import flax.nnx as nnx
import jax.numpy as jnp
import numpy as np
import optax

from examples.paper import models
import gsm_optax

LENGTH, VOCAB = 16, 16
METHODS = ('mask_then_adamw', 'global_sparse', 'global_sparse_smoothed',
           'gradual_magnitude')


def batch(rng, size):
  tokens = rng.integers(0, VOCAB, size=(size, LENGTH)).astype(np.int32)
  return tokens, tokens[:, ::-1].copy()


def make_tx(method, ratio, steps, lr, weight_decay, passive_decay):
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, steps // 20, steps)
  adamw = optax.adamw(schedule, weight_decay=weight_decay)
  if method == 'dense':
    return adamw
  if method == 'mask_then_adamw':
    return optax.chain(gsm_optax.keep_top_taylor(ratio), adamw)
  if method == 'global_sparse':
    return gsm_optax.global_sparse(adamw, ratio, passive_decay=passive_decay)
  if method == 'global_sparse_smoothed':
    return gsm_optax.global_sparse(adamw, ratio, passive_decay=passive_decay,
                                   score_decay=0.99)
  if method == 'gradual_magnitude':
    return optax.chain(adamw, gsm_optax.gradual_magnitude_pruning(
        ratio, begin_step=0, end_step=int(0.75 * steps), update_every=50))
  raise ValueError(f'unknown method {method!r}; known: {METHODS}')


def loss_fn(model, tokens, targets):
  logits = model(tokens)
  return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                         targets).mean()


@nnx.jit
def train_step(model, optimizer, tokens, targets):
  loss, grads = nnx.value_and_grad(loss_fn)(model, tokens, targets)
  optimizer.update(model, grads)
  return loss


@nnx.jit
def token_accuracy(model, tokens, targets):
  return jnp.mean(jnp.argmax(model(tokens), -1) == targets)


def train(model, tx, steps, rng, batch_size):
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  for _ in range(steps):
    train_step(model, optimizer, *batch(rng, batch_size))


def run_seed(seed, ratio, steps, lr, weight_decay, passive_decay, batch_size,
             methods=METHODS):
  """Dense training, then every method from the same dense model."""
  rng = np.random.default_rng(seed)
  test = batch(np.random.default_rng(1000 + seed), 2048)
  model = models.TinyTransformer(VOCAB, LENGTH, rngs=nnx.Rngs(seed))
  start = time.time()
  train(model, make_tx('dense', ratio, steps, lr, weight_decay, None), steps,
        rng, batch_size)
  dense_state = nnx.state(model)
  out = {'seed': seed, 'dense_accuracy': float(token_accuracy(model, *test)),
         'dense_seconds': time.time() - start, 'methods': {}}
  for method in methods:
    nnx.update(model, dense_state)
    start = time.time()
    train(model, make_tx(method, ratio, steps, lr, weight_decay,
                         passive_decay), steps, np.random.default_rng(
                             seed + 1), batch_size)
    before = float(token_accuracy(model, *test))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    check = gsm_optax.check_final_prune(params, ratio, warn=False)
    pruned, _ = gsm_optax.prune(params, ratio)
    nnx.update(model, pruned)
    report = gsm_optax.sparsity_report(pruned)
    out['methods'][method] = {
        'accuracy_before_prune': before,
        'pruned_accuracy': float(token_accuracy(model, *test)),
        'pruned_norm_share': check.share, 'prune_warning': not check.ok,
        'compression': report.compression,
        'layer_density': {l.path: l.density for l in report.leaves
                          if l.prunable},
        'seconds': time.time() - start}
    print(f"seed {seed} {method}: before {before:.2%}, after "
          f"{out['methods'][method]['pruned_accuracy']:.2%}, share "
          f'{check.share:.3f}', flush=True)
  return out


def table_lines(result):
  """Mean ± std over seeds of each method's token accuracy."""
  def stat(values):
    mean = 100 * statistics.mean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{mean:.2f} ± {std:.2f}'
  seeds = result['seeds']
  lines = [f"Dense: {stat([s['dense_accuracy'] for s in seeds])}; ratio "
           f"{result['ratio']:g}×, {result['steps']} AdamW steps a phase, "
           f"passive_decay {result['passive_decay']:g}, {len(seeds)} seeds.",
           '',
           '| method | before the prune | after | cost (points) | norm share '
           'removed | warning fired |', '|---|---|---|---|---|---|']
  for method in result['methods']:
    runs = [s['methods'][method] for s in seeds]
    before = [r['accuracy_before_prune'] for r in runs]
    after = [r['pruned_accuracy'] for r in runs]
    lines.append(
        f'| {method} | {stat(before)} | {stat(after)} | '
        f'{stat([b - a for b, a in zip(before, after)])} | '
        f"{statistics.mean(r['pruned_norm_share'] for r in runs):.3f} | "
        f"{sum(r['prune_warning'] for r in runs)} of {len(runs)} |")
  return lines


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--ratio', type=float, default=10.0)
  parser.add_argument('--steps', type=int, default=3000)
  parser.add_argument('--lr', type=float, default=1e-3)
  parser.add_argument('--weight-decay', type=float, default=1e-2)
  parser.add_argument('--passive-decay', type=float, default=5e-3)
  parser.add_argument('--batch-size', type=int, default=128)
  parser.add_argument('--methods', default=','.join(METHODS))
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  methods = args.methods.split(',')
  result = {'ratio': args.ratio, 'steps': args.steps, 'lr': args.lr,
            'weight_decay': args.weight_decay,
            'passive_decay': args.passive_decay, 'methods': methods,
            'seeds': [run_seed(int(s), args.ratio, args.steps, args.lr,
                               args.weight_decay, args.passive_decay,
                               args.batch_size, methods)
                      for s in args.seeds.split(',')]}
  print('\n'.join(table_lines(result)))
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=1)


if __name__ == '__main__':
  main()
