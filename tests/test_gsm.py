"""GSM against an independent NumPy reference, and its documented properties."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from reference import gsm_reference_step

import gsm_optax


def make_problem(seed=0):
  """A small model with two kernels, a conv kernel and biases."""
  rng = np.random.default_rng(seed)
  params = {
      'conv': rng.normal(size=(3, 3, 2, 4)).astype(np.float32),
      'conv_b': rng.normal(size=(4,)).astype(np.float32),
      'dense1': rng.normal(size=(10, 8)).astype(np.float32),
      'dense1_b': rng.normal(size=(8,)).astype(np.float32),
      'dense2': rng.normal(size=(8, 3)).astype(np.float32),
  }
  targets = {k: rng.normal(size=v.shape).astype(np.float32)
             for k, v in params.items()}
  curv = {k: rng.uniform(0.5, 2.0, size=v.shape).astype(np.float32)
          for k, v in params.items()}
  return params, targets, curv


def numpy_grads(params, targets, curv):
  """Gradient of 0.5 * sum(c * (w - t)**2), computed in NumPy."""
  return {k: curv[k] * (params[k] - targets[k]) for k in params}


def loss_fn(params, targets, curv):
  return sum(0.5 * jnp.sum(curv[k] * (params[k] - targets[k]) ** 2)
             for k in params)


@pytest.mark.parametrize('nesterov', [False, True])
@pytest.mark.parametrize('ratio', [1.0, 3.0, 10.0, 50.0])
@pytest.mark.parametrize('custom_prunable', [False, True])
@pytest.mark.parametrize('method', gsm_optax.SELECTION_METHODS)
def test_matches_numpy_reference(nesterov, ratio, custom_prunable, method):
  params, targets, curv = make_problem()
  prunable = {k: k in ('dense1', 'dense2') for k in params} if custom_prunable \
      else {k: v.ndim >= 2 for k, v in params.items()}
  lr, momentum, wd = 0.05, 0.9, 5e-3
  tx = gsm_optax.gsm(lr, ratio, momentum=momentum, weight_decay=wd,
                     nesterov=nesterov,
                     prunable=prunable if custom_prunable else None,
                     method=method)
  jparams = jax.tree.map(jnp.asarray, params)
  state = tx.init(jparams)

  @jax.jit
  def step(p, s):
    g = jax.grad(loss_fn)(p, targets, curv)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  ref_params = dict(params)
  bufs = {k: np.zeros_like(v) for k, v in params.items()}
  n_prunable = sum(v.size for k, v in params.items() if prunable[k])
  for _ in range(25):
    grads = numpy_grads(ref_params, targets, curv)
    ref_params, bufs, masks, threshold = gsm_reference_step(
        ref_params, grads, bufs, lr=lr, ratio=ratio, momentum=momentum,
        weight_decay=wd, nesterov=nesterov, prunable=prunable)
    jparams, state = step(jparams, state)
    mask_state = state[0]
    assert int(mask_state.num_active) == sum(m.sum() for m in masks.values())
    assert int(mask_state.num_active) == int(np.floor(n_prunable / ratio))
    np.testing.assert_allclose(mask_state.threshold, threshold, rtol=1e-5,
                               atol=1e-6)
    for k in params:
      np.testing.assert_allclose(jparams[k], ref_params[k], rtol=1e-5,
                                 atol=1e-6, err_msg=k)


def test_exact_active_count_and_masked_gradient():
  params, targets, curv = make_problem(1)
  tx = gsm_optax.keep_top_taylor(ratio=7.0)
  grads = numpy_grads(params, targets, curv)
  updates, state = tx.update(grads, tx.init(params), params)
  ranked = ['conv', 'dense1', 'dense2']
  n = sum(params[k].size for k in ranked)
  assert int(state.num_active) == n // 7
  assert sum(int(np.count_nonzero(updates[k])) for k in ranked) == n // 7
  for k in ('conv_b', 'dense1_b'):  # non-prunable leaves pass unchanged
    np.testing.assert_array_equal(updates[k], grads[k])


def test_ties_are_kept():
  params = {'w': jnp.ones((4, 5)), 'v': jnp.ones((5, 2))}
  grads = {'w': jnp.full((4, 5), 2.0).at[0, 0].set(9.0),
           'v': jnp.full((5, 2), 2.0)}
  # Q = floor(30 / 10) = 3: one score of 9, then 29 tied scores of 2.
  for method in gsm_optax.SELECTION_METHODS:
    tx = gsm_optax.keep_top_taylor(10.0, method=method)
    updates, state = tx.update(grads, tx.init(params), params)
    assert int(state.num_active) == 30
    assert float(state.threshold) == 2.0
    np.testing.assert_array_equal(updates['w'], grads['w'])


def test_fewer_nonzero_scores_than_q_lets_every_gradient_pass():
  params = {'w': jnp.zeros((4, 4)).at[0, 0].set(1.0)}
  grads = {'w': jnp.ones((4, 4))}
  tx = gsm_optax.keep_top_taylor(2.0)
  updates, state = tx.update(grads, tx.init(params), params)
  assert float(state.threshold) == 0.0
  assert int(state.num_active) == 16
  np.testing.assert_array_equal(updates['w'], grads['w'])


def test_ratio_one_is_momentum_sgd_with_decay():
  params, targets, curv = make_problem(2)
  decay_mask = {k: v.ndim >= 2 for k, v in params.items()}
  gsm = gsm_optax.gsm(0.1, 1.0, momentum=0.9, weight_decay=1e-2)
  sgd = optax.chain(optax.add_decayed_weights(1e-2, mask=decay_mask),
                    optax.sgd(0.1, momentum=0.9))
  p1 = p2 = jax.tree.map(jnp.asarray, params)
  s1, s2 = gsm.init(p1), sgd.init(p2)
  for _ in range(10):
    g1 = jax.grad(loss_fn)(p1, targets, curv)
    g2 = jax.grad(loss_fn)(p2, targets, curv)
    u1, s1 = gsm.update(g1, s1, p1)
    u2, s2 = sgd.update(g2, s2, p2)
    p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
  chex_tree_close(p1, p2)


def chex_tree_close(a, b, rtol=1e-6):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol), a, b)


def test_never_active_weight_follows_closed_form():
  lr, beta, lam, steps = 0.1, 0.98, 0.05, 200
  w0 = 0.7
  # 'w[0, 0]' has zero gradient, so it never ranks among the top Q = 3.
  params = {'w': jnp.array([[w0, 1.0], [1.0, 1.0]])}
  grads = {'w': jnp.array([[0.0, 1.0], [1.0, 1.0]])}
  tx = gsm_optax.gsm(lr, 4 / 3, momentum=beta, weight_decay=lam)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for _ in range(steps):
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    assert float(state[0].threshold) > 0  # so the zero score is never active
  # z' = beta z + lam w; w' = w - lr z'  =>  [w, z]' = M [w, z].
  m = np.array([[1 - lr * lam, -lr * beta], [lam, beta]])
  expected = np.linalg.matrix_power(m, steps) @ np.array([w0, 0.0])
  np.testing.assert_allclose(params['w'][0, 0], expected[0], rtol=1e-5)
  assert abs(expected[0]) < 0.05 * w0  # it really glided towards zero


def test_passive_weight_is_reactivated_when_its_score_rises():
  params = {'w': jnp.array([[1.0, 1.0], [1.0, 1.0]])}
  tx = gsm_optax.keep_top_taylor(2.0)
  state = tx.init(params)
  g1 = {'w': jnp.array([[5.0, 4.0], [0.1, 0.2]])}
  u1, state = tx.update(g1, state, params)
  assert float(u1['w'][1, 0]) == 0.0
  g2 = {'w': jnp.array([[5.0, 4.0], [9.0, 0.2]])}
  u2, state = tx.update(g2, state, params)
  np.testing.assert_array_equal(u2['w'], [[5.0, 0.0], [9.0, 0.0]])


def test_learning_rate_schedule():
  params, targets, curv = make_problem(3)
  schedule = optax.linear_schedule(0.1, 0.0, 5)
  tx = gsm_optax.gsm(schedule, 4.0)
  state = tx.init(params)
  g = numpy_grads(params, targets, curv)
  for _ in range(6):
    u, state = tx.update(g, state, params)
  assert all(np.all(x == 0) for x in jax.tree.leaves(u))  # lr reached 0


def test_bfloat16_params_keep_dtype():
  params = {'w': jnp.ones((8, 8), jnp.bfloat16), 'b': jnp.ones(8, jnp.bfloat16)}
  grads = jax.tree.map(lambda x: x * 0.5, params)
  tx = gsm_optax.gsm(0.1, 4.0)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
