"""The phases' optimizers hold the peak learning rate in their state
(`examples.paper.phases.peak_in_state`): the same updates, bit for bit, as
with the peak compiled in, and one compiled step for every peak."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from examples.paper import phases


def small_config(ratio_warmup_epochs=0):
  config = importlib.import_module(
      'examples.paper.configs.lenet300_fmnist').get_config()
  config.ratio = 4.0
  for g in (config.dense, config.gsm):
    g.warmup_epochs = 1
    g.decay_epochs = (2,)  # a decay inside the steps taken below
  config.gsm.ratio_warmup_epochs = ratio_warmup_epochs
  return config


PARAMS = {'Dense_0': {'kernel': jnp.zeros((12, 8)), 'bias': jnp.zeros((8,))},
          'Dense_1': {'kernel': jnp.zeros((8, 3)), 'bias': jnp.zeros((3,))}}
STEPS_PER_EPOCH = 3


def optimizers(kind, peak, ratio_warmup_epochs=0):
  """(peak in the state, peak compiled in) of one phase's optimizer."""
  config = small_config(ratio_warmup_epochs)
  config.dense.learning_rate = config.gsm.learning_rate = peak
  if kind == 'sgd':
    return (phases.sgd_with_decay(config.dense, STEPS_PER_EPOCH),
            phases.momentum_sgd(config.dense, STEPS_PER_EPOCH))
  phase = phases.pruning_phase(config, STEPS_PER_EPOCH, snapshots={})
  return (phase.make_tx(),
          phases.gsm_with_ratio_warmup(config, STEPS_PER_EPOCH))


def train(tx, steps=9):
  """``steps`` jitted updates on fixed random gradients; the params."""
  keys = jax.random.split(jax.random.key(0), steps + 1)
  leaves, treedef = jax.tree.flatten(PARAMS)
  params = treedef.unflatten(
      [jax.random.normal(jax.random.fold_in(keys[0], i), p.shape)
       for i, p in enumerate(leaves)])
  state = tx.init(params)

  @jax.jit
  def step(params, state, key):
    grads = jax.tree.map(lambda p: jax.random.normal(key, p.shape) * p,
                         params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for key in keys[1:]:
    params, state = step(params, state, key)
  return params


@pytest.mark.parametrize('kind,warmup', [('sgd', 0), ('gsm', 0), ('gsm', 2)])
def test_peak_in_state_gives_the_same_updates_bit_for_bit(kind, warmup):
  trained = {}
  for peak in (0.01, 0.03):
    in_state, compiled_in = optimizers(kind, peak, warmup)
    got, want = train(in_state), train(compiled_in)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    trained[peak] = got
  # The peak matters (the check above could not pass by ignoring it).
  assert not np.array_equal(trained[0.01]['Dense_0']['kernel'],
                            trained[0.03]['Dense_0']['kernel'])


@pytest.mark.parametrize('kind', ['sgd', 'gsm'])
def test_one_compiled_step_serves_every_peak(kind):
  def hlo(peak, which):
    tx = optimizers(kind, peak)[which]
    state = tx.init(PARAMS)
    return jax.jit(tx.update).lower(PARAMS, state, PARAMS).as_text()
  assert hlo(0.01, 0) == hlo(0.03, 0)
  assert hlo(0.01, 1) != hlo(0.03, 1)  # compiled in: one program per peak
