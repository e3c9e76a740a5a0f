"""`global_sparse`: GSM's mask around any optimizer, with the passive decay.

Checked against an independent NumPy statement: the top-Q mask, the inner
optimizer on the masked gradient (optax's own, which is not under test), and
``-rho * w`` on every passive prunable weight.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from reference import gsm_reference_step
from reference import kth_largest

import gsm_optax

SHAPES = {'a': (6, 5), 'b': (4, 3, 2), 'bias': (5,)}
RANKED = ('a', 'b')


def random_tree(rng, scale=1.0):
  return {k: (scale * rng.normal(size=s)).astype(np.float32)
          for k, s in SHAPES.items()}


def reference_masks(params, grads, ratio):
  q = int(sum(params[k].size for k in RANKED) // ratio)
  scores = {k: np.abs(grads[k] * params[k]) for k in RANKED}
  t = kth_largest(np.concatenate([s.ravel() for s in scores.values()]), q)
  return {k: scores[k] >= t for k in RANKED}


@pytest.mark.parametrize('rho', [0.0, 1e-2, 'schedule'])
def test_adamw_with_passive_decay_against_a_reference(rho):
  rng = np.random.default_rng(0)
  params = random_tree(rng)
  ratio = 6.0
  decay = (optax.linear_schedule(0.0, 0.1, 4) if rho == 'schedule' else rho)
  tx = gsm_optax.global_sparse(optax.adamw(1e-2), ratio, passive_decay=decay)
  inner = optax.adamw(1e-2)
  state, inner_state = tx.init(params), inner.init(params)
  step = jax.jit(tx.update)
  for t in range(5):
    grads = random_tree(rng)
    masks = reference_masks(params, grads, ratio)
    masked = {k: np.where(masks[k], g, 0) if k in masks else g
              for k, g in grads.items()}
    expected, inner_state = inner.update(masked, inner_state, params)
    r = float(decay(t)) if callable(decay) else decay
    expected = {k: np.asarray(u) - (np.where(masks[k], 0, r * params[k])
                                    if k in masks else 0)
                for k, u in expected.items()}
    updates, state = step(grads, state, params)
    for k in SHAPES:
      np.testing.assert_allclose(updates[k], expected[k], rtol=1e-6,
                                 atol=1e-8)
    assert int(gsm_optax.find_mask_state(state).num_active) == sum(
        int(m.sum()) for m in masks.values())
    params = jax.tree.map(lambda w, u: np.asarray(w + u), params, updates)


def test_gsm_with_passive_decay_is_the_reference_step_plus_the_decay():
  rng = np.random.default_rng(1)
  params = random_tree(rng)
  kwargs = dict(lr=0.1, ratio=4.0, momentum=0.9, weight_decay=1e-3,
                nesterov=True)
  rho = 0.05
  tx = gsm_optax.gsm(kwargs['lr'], kwargs['ratio'], kwargs['momentum'],
                     kwargs['weight_decay'], kwargs['nesterov'],
                     passive_decay=rho)
  state = tx.init(params)
  bufs = {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}
  prunable = {k: k in RANKED for k in SHAPES}
  for _ in range(4):
    grads = random_tree(rng)
    expected, bufs, masks, _ = gsm_reference_step(
        params, grads, bufs, prunable=prunable, **kwargs)
    for k in RANKED:  # the passive weights also lose rho * w
      expected[k] = expected[k] - np.where(masks[k], 0, rho * params[k])
    updates, state = tx.update(grads, state, params)
    params = jax.tree.map(lambda w, u: np.asarray(w + u), params, updates)
    for k in SHAPES:
      np.testing.assert_allclose(params[k], expected[k], rtol=1e-5, atol=1e-7)


def test_without_passive_decay_it_is_the_gsm_chain_exactly():
  rng = np.random.default_rng(2)
  params = random_tree(rng)
  chain = gsm_optax.gsm(0.1, 4.0, momentum=0.9, weight_decay=1e-3)
  wrapped = gsm_optax.global_sparse(optax.chain(
      optax.add_decayed_weights(1e-3, mask=gsm_optax.default_prunable),
      optax.trace(0.9), optax.scale_by_learning_rate(0.1)), 4.0)
  s1, s2 = chain.init(params), wrapped.init(params)
  for _ in range(3):
    grads = random_tree(rng)
    u1, s1 = chain.update(grads, s1, params)
    u2, s2 = wrapped.update(grads, s2, params)
    jax.tree.map(np.testing.assert_array_equal, u1, u2)
    params = optax.apply_updates(params, u1)
  assert s2[0] == s2.mask  # state[0] is the mask's, as in gsm's chain


def test_passive_weights_glide_to_zero_under_adamw():
  # With no passive decay, AdamW leaves a weight that loses the gradient
  # almost where it was; with rho, it is (1 - rho)**k of its size.
  params = {'w': jnp.array([[4.0, 3.0, 2.0, 1.0]])}
  grads = {'w': jnp.array([[1.0, 1.0, 0.0, 0.0]])}  # two never active
  for rho, expected in ((None, 1.0), (0.1, 0.9**50)):
    tx = gsm_optax.global_sparse(optax.adamw(1e-3, weight_decay=0.0), 2.0,
                                 passive_decay=rho)
    state, w, step = tx.init(params), params, jax.jit(tx.update)
    for _ in range(50):
      updates, state = step(grads, state, w)
      w = optax.apply_updates(w, updates)
    np.testing.assert_allclose(w['w'][0, 2:] / params['w'][0, 2:], expected,
                               rtol=1e-4)


def test_passive_decay_errors_name_the_argument():
  with pytest.raises(ValueError, match='`passive_decay`.*1e-3'):
    gsm_optax.global_sparse(optax.sgd(0.1), 2.0, passive_decay=1.5)
  with pytest.raises(TypeError, match='`passive_decay`'):
    gsm_optax.gsm(0.1, 2.0, passive_decay='fast')
