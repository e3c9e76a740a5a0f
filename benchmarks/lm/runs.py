"""One run of the language-model benchmark: a one-shot prune, or a
training run from the dense model or a one-shot start, and what is measured
after it (perplexities, kept weights; for a structured target the slim
model's widths and speed). `run.py` is the loop and the command line.
"""

import platform
import time

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.lm import methods as methods_lib
from examples.lm import data
from examples.lm import model as model_lib
from examples.lm import train
from examples.paper import timing
import gsm_optax

CALIBRATION_SEQUENCES = 128


def calibration(tokens: np.ndarray, seq_len: int, seed: int) -> np.ndarray:
  """The papers' calibration set: 128 training sequences at random offsets
  (``seed`` draws them), inputs only."""
  rng = np.random.default_rng((seed, 128))
  return data.sample(tokens, seq_len, CALIBRATION_SEQUENCES, rng)[:, :-1]


def forward_of(model):
  graphdef, _ = nnx.split(model, nnx.Param)
  return lambda p, tokens: nnx.merge(graphdef, p)(tokens)


def groups_of(model, config) -> gsm_optax.Groups:
  """The model's heads, head dims and MLP neurons (``find_groups``; FLOPs
  counted on one sequence of ``seq_len``)."""
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return gsm_optax.find_groups(forward_of(model), params,
                               jnp.zeros((1, config.seq_len), jnp.int32))


def structure(model, config, sparsity) -> dict:
  """The arguments that make a pruner remove what ``sparsity`` asks: whole
  groups to a FLOPs budget, an N:M pattern, or single weights."""
  if sparsity.structured:
    return {'groups': groups_of(model, config), 'budget': 'flops'}
  return {'pattern': sparsity.pattern, 'prunable': model_lib.kernels(
      nnx.to_pure_dict(nnx.state(model, nnx.Param)))}


def one_shot_params(model, config, splits, method, sparsity, seed, how):
  """The model's params pruned one-shot (``how``: `structure`'s), their
  masks, and the seconds."""
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  start = time.perf_counter()
  if sparsity.structured:  # whole groups by magnitude: no calibration
    pruned, masks = gsm_optax.prune(params, sparsity.ratio, **how)
    return pruned, masks, time.perf_counter() - start
  pruned, masks = gsm_optax.one_shot_prune(
      forward_of(model), params, jnp.asarray(calibration(
          splits['train'], config.seq_len, seed)),
      sparsity.ratio, method=method.method, allocation=method.allocation,
      **how)
  return pruned, masks, time.perf_counter() - start


def evaluate(model, pruned, config, splits, sparsity, how, result):
  """Adds the perplexities and the kept weights of ``pruned`` to
  ``result`` (and, for a structured target, its slim model: ``how``'s
  groups)."""
  graphdef, _ = nnx.split(model, nnx.Param)
  pruned_model = nnx.merge(graphdef, pruned)
  for name in ('validation', 'test'):
    result[f'{name}_perplexity'] = train.perplexity(
        pruned_model, splits[name], config.seq_len, config.eval_batch)
  report = gsm_optax.sparsity_report(pruned, prunable=model_lib.kernels(
      pruned), pattern=sparsity.pattern)
  result['kept'] = {l.path: [l.nonzero, l.size] for l in report.leaves
                    if l.prunable}
  result['kept_fraction'] = report.prunable_nonzero / report.prunable_size
  if sparsity.structured:
    result['slim'] = slim_speed(model, pruned, config, how['groups'])
  return result


def slim_speed(model, pruned, config, groups, repeats=30) -> dict:
  """The slim model (passive groups cut out): its widths, FLOPs, params,
  and its speed against the dense model's in tokens per second at batch 1
  and 32, the four calls alternated in this process (medians)."""
  forward = forward_of(model)
  dense = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  slim_params, slim_fn, info = gsm_optax.slim(forward, pruned, groups)
  dense_fn, slim_fn = jax.jit(forward), jax.jit(slim_fn)
  rng = np.random.default_rng(0)
  tokens = {b: jnp.asarray(rng.integers(0, 256, (b, config.seq_len)))
            for b in (1, 32)}
  np.testing.assert_allclose(slim_fn(slim_params, tokens[32]),
                             dense_fn(pruned, tokens[32]), rtol=2e-4,
                             atol=2e-4)  # the same model, smaller
  seconds = timing.median_seconds(
      {f'{name}_{b}': (lambda f=f, p=p, b=b: f(p, tokens[b]))
       for b in tokens
       for name, f, p in (('dense', dense_fn, dense),
                          ('slim', slim_fn, slim_params))}, repeats)
  return {'channels': [list(c) for c in info.channels],
          'flops': list(info.flops), 'params': list(info.params),
          'seconds': seconds,
          'speedup': {str(b): seconds[f'dense_{b}'] / seconds[f'slim_{b}']
                      for b in tokens},
          'tokens_per_second': {
              f'{k}': b * config.seq_len / seconds[k] for k in seconds
              for b in [int(k.split('_')[1])]},
          'platform': platform.processor() or platform.machine()}


def one_shot(model, config, splits, method, sparsity, seed) -> dict:
  """One one-shot run's result (the model is left as it was)."""
  how = structure(model, config, sparsity)
  pruned, _, seconds = one_shot_params(model, config, splits, method,
                                       sparsity, seed, how)
  return evaluate(model, pruned, config, splits, sparsity, how, {
      'method': method.name, 'sparsity': sparsity.name, 'seed': seed,
      'seconds': seconds})


def trained(model, config, splits, method, sparsity, seed, steps,
            learning_rate) -> dict:
  """One training run's result: from the dense model or a one-shot start,
  ``steps`` AdamW steps (peak ``learning_rate``) under the method's rule,
  then its final prune."""
  graphdef, state = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(state)
  how = structure(model, config, sparsity)
  masks = None
  if method.start != 'dense':
    params, masks, _ = one_shot_params(
        model, config, splits, methods_lib.METHODS[method.start], sparsity,
        seed, how)
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, max(steps // 10, 1), steps)
  adamw = optax.adamw(schedule, weight_decay=config.weight_decay,
                      mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p))
  if method.rule == 'fixed':
    tx = optax.chain(gsm_optax.fixed_mask(masks), adamw)
  elif method.rule == 'gradual':
    tx = optax.chain(adamw, gsm_optax.gradual_magnitude_pruning(
        sparsity.ratio, 0, int(0.75 * steps), max(steps // 50, 1),
        **how))
  else:  # gsm: the recipe (docs: FAQ), passive weights to about e^-10
    tx = gsm_optax.global_sparse(
        adamw, sparsity.ratio,
        passive_decay=min(method.passive_steps / steps, 0.5),
        score_decay=method.score_decay, **how)
  start = time.perf_counter()
  params, _ = train.fit(config, graphdef, params, tx, splits, steps, seed)
  result = {'method': method.name, 'sparsity': sparsity.name, 'seed': seed,
            'steps': steps, 'learning_rate': learning_rate}
  if method.rule == 'gsm':
    result['before_prune'] = train.perplexity(
        nnx.merge(graphdef, params), splits['validation'], config.seq_len,
        config.eval_batch)
    params, _ = gsm_optax.prune(params, sparsity.ratio, **how)
  result['seconds'] = time.perf_counter() - start
  return evaluate(model, params, config, splits, sparsity, how, result)
