"""Training the small GPT on byte tokens: deterministic and resumable.

The batches are drawn from a NumPy generator seeded by ``(seed, step)``, so
a run killed and resumed from its last orbax checkpoint (model, optimizer
and step) continues with the same batches, bit for bit. The perplexity is
measured on non-overlapping segments of ``seq_len`` tokens (the papers'
protocol), in ``eval_batch`` segments at a time.
"""

import dataclasses
import json
import os

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from examples.lm import data
from examples.lm import model as model_lib
from examples.paper import checkpoints


@dataclasses.dataclass
class Config:
  width: int = 128
  layers: int = 4
  heads: int = 4
  seq_len: int = 128
  batch_size: int = 32
  steps: int = 3000
  learning_rate: float = 3e-3  # AdamW, warm-up then cosine to 0
  warmup_steps: int = 200
  weight_decay: float = 0.1
  checkpoint_every: int = 500
  eval_batch: int = 64
  seed: int = 0
  workdir: str = 'runs/lm'

  def gpt(self) -> model_lib.GPTConfig:
    return model_lib.GPTConfig(seq_len=self.seq_len, width=self.width,
                               heads=self.heads, layers=self.layers)


def loss_fn(model, batch):
  logits = model(batch[:, :-1])
  return optax.softmax_cross_entropy_with_integer_labels(
      logits, batch[:, 1:]).mean()


@nnx.jit
def train_step(model, optimizer, batch):
  loss, grads = nnx.value_and_grad(loss_fn)(model, batch)
  optimizer.update(model, grads)
  return loss


@nnx.jit
def _nll_sum(model, batch):
  logits = model(batch[:, :-1])
  return optax.softmax_cross_entropy_with_integer_labels(
      logits, batch[:, 1:]).sum()


def perplexity(model, tokens: np.ndarray, seq_len: int,
               eval_batch: int = 64) -> float:
  """exp(mean next-token NLL) over non-overlapping ``seq_len`` segments."""
  segments = data.windows(tokens, seq_len)
  total = 0.0
  for s in range(0, len(segments), eval_batch):
    total += float(_nll_sum(model, jnp.asarray(segments[s:s + eval_batch])))
  return float(np.exp(total / (len(segments) * seq_len)))


def optimizer_for(config: Config, model) -> nnx.Optimizer:
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, config.warmup_steps, config.steps)
  tx = optax.adamw(schedule, weight_decay=config.weight_decay,
                   mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p))
  return nnx.Optimizer(model, tx, wrt=nnx.Param)


def batch_at(config: Config, tokens: np.ndarray, step: int) -> np.ndarray:
  """The batch of training step ``step``: the same whenever it is drawn."""
  rng = np.random.default_rng((config.seed, step))
  return data.sample(tokens, config.seq_len, config.batch_size, rng)


def train(config: Config, splits: dict, stop_at: int | None = None) -> dict:
  """Trains (resuming from ``config.workdir``'s last checkpoint), then
  measures the perplexities; ``stop_at`` ends early (tests of resuming)."""
  model = model_lib.GPT(config.gpt(), nnx.Rngs(config.seed))
  optimizer = optimizer_for(config, model)
  ckpt = checkpoints.Checkpoints(config.workdir)
  done = ckpt.latest_step()
  if done:
    ckpt.restore(done, model, optimizer)
  last = config.steps if stop_at is None else min(stop_at, config.steps)
  bar = tqdm.tqdm(range(done, last), desc='dense', initial=done,
                  total=config.steps, disable=None)
  loss = float('nan')
  for step in bar:
    loss = train_step(model, optimizer,
                      jnp.asarray(batch_at(config, splits['train'], step)))
    if (step + 1) % config.checkpoint_every == 0 or step + 1 == last:
      ckpt.save(step + 1, model, optimizer)
      bar.set_postfix(loss=f'{float(loss):.3f}')
  result = {'steps': last, 'train_loss': float(loss)}
  if last == config.steps:
    for name in ('validation', 'test'):
      result[f'{name}_perplexity'] = perplexity(
          model, splits[name], config.seq_len, config.eval_batch)
      for order, baseline in ((1, 'unigram'), (2, 'bigram')):
        result[f'{name}_{baseline}_perplexity'] = data.ngram_perplexity(
            splits['train'], splits[name], order)
    path = os.path.join(config.workdir, 'result.json')
    with open(path + '.tmp', 'w') as f:
      json.dump({'config': dataclasses.asdict(config), **result}, f,
                indent=1)
    os.replace(path + '.tmp', path)
  result['model'] = model
  return result


def fit(config: Config, graphdef, params, tx, splits: dict, steps: int,
        seed: int = 0):
  """Trains the params of ``nnx.merge(graphdef, params)`` (a pure dict, as
  `gsm_optax` reads them: masks and ``prunable`` trees are pure dicts too)
  with ``tx`` (any optax transformation; GSM's needs the params) for
  ``steps`` batches drawn as `batch_at` draws them, from ``(config.seed +
  1000 * (seed + 1), step)``: a fine-tune's batches, not the dense run's.
  Returns the params and the optimizer state (GSM's mask statistics)."""

  @jax.jit
  def step(params, state, batch):
    grads = jax.grad(lambda p: loss_fn(nnx.merge(graphdef, p), batch))(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  tuned = dataclasses.replace(config, seed=config.seed + 1000 * (seed + 1))
  for i in tqdm.tqdm(range(steps), desc='fine-tune', disable=None):
    params, state = step(params, state,
                         jnp.asarray(batch_at(tuned, splits['train'], i)))
  return params, state
