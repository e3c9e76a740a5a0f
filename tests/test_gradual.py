"""Gradual magnitude pruning baseline (Zhu & Gupta 2017)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gsm_optax


def test_cubic_schedule_matches_formula():
  ratio, t0, t1 = 20.0, 10, 110
  for step in (0, 10, 35, 60, 109, 110, 500):
    t = min(max((step - t0) / (t1 - t0), 0), 1)
    s = (1 - 1 / ratio) * (1 - (1 - t) ** 3)
    np.testing.assert_allclose(
        gsm_optax.cubic_keep_fraction(step, ratio, t0, t1), 1 - s, rtol=1e-6)


def params_and_loss(seed=0):
  rng = np.random.default_rng(seed)
  params = {'a': jnp.asarray(rng.normal(size=(30, 20)), jnp.float32),
            'b': jnp.asarray(rng.normal(size=(20, 5)) * 0.3, jnp.float32),
            'bias': jnp.asarray(rng.normal(size=(5,)), jnp.float32)}
  x = jnp.asarray(rng.normal(size=(16, 30)), jnp.float32)
  loss = lambda p: jnp.mean((x @ p['a'] @ p['b'] + p['bias']) ** 2)
  return params, jax.grad(loss)


@pytest.mark.parametrize('global_ranking', [True, False])
def test_reaches_exact_final_sparsity_and_keeps_pruned_weights_zero(
    global_ranking):
  params, grad_fn = params_and_loss()
  ratio, end = 10.0, 40
  tx = optax.chain(optax.sgd(0.01, momentum=0.9),
                   gsm_optax.gradual_magnitude_pruning(
                       ratio, begin_step=0, end_step=end, update_every=10,
                       global_ranking=global_ranking))
  state = tx.init(params)
  step = jax.jit(lambda p, s: tx.update(grad_fn(p), s, p))
  previous_zeros = None
  for i in range(60):
    updates, state = step(params, state)
    params = optax.apply_updates(params, updates)
    zeros = [np.asarray(params[k]) == 0 for k in ('a', 'b')]
    if previous_zeros is not None:  # once pruned, always zero
      for z, pz in zip(zeros, previous_zeros):
        assert np.all(z[pz])
    previous_zeros = zeros
    if i == 20:  # halfway: keep fraction from the cubic schedule
      keep = gsm_optax.cubic_keep_fraction(20, ratio, 0, end)
      if global_ranking:
        assert sum(np.count_nonzero(params[k]) for k in ('a', 'b')) == int(
            np.floor(700 * keep))
  nonzero = {k: int(np.count_nonzero(params[k])) for k in ('a', 'b')}
  if global_ranking:
    assert nonzero['a'] + nonzero['b'] == 700 // 10
  else:
    assert nonzero == {'a': 600 // 10, 'b': 100 // 10}
  assert np.count_nonzero(params['bias']) == 5


def test_global_ranking_keeps_the_largest_magnitudes():
  params, _ = params_and_loss(1)
  tx = gsm_optax.gradual_magnitude_pruning(7.0, begin_step=0, end_step=0)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  pruned = optax.apply_updates(params, updates)
  expected, _ = gsm_optax.prune(params, 7.0)
  jax.tree.map(np.testing.assert_array_equal, pruned, expected)


def test_bad_schedule():
  with pytest.raises(ValueError, match='`end_step` must be >= `begin_step`'):
    gsm_optax.gradual_magnitude_pruning(4.0, begin_step=10, end_step=5)
  with pytest.raises(ValueError, match='`ratio`'):
    gsm_optax.gradual_magnitude_pruning(0.5, 0, 10)


def test_final_update_never_revives_pruned_weights_after_rounding():
  # LeNet-5's 430,500 kernel weights at 60x, ending at step 2808 with updates
  # every 50 steps: float32 floor(n * keep) at step 2800 is 7174, one below
  # the final Q = 7175 (the bug that revived every weight at the end).
  n, ratio, end = 430_500, 60.0, 2808
  final_q = n // 60
  w = jnp.asarray(np.random.default_rng(0).normal(size=(861, 500)),
                  jnp.float32)
  params = {'w': w}
  tx = gsm_optax.gradual_magnitude_pruning(ratio, 0, end, update_every=50)
  state = tx.init(params)._replace(count=jnp.asarray(2800, jnp.int32))
  step = jax.jit(lambda p, s: tx.update({'w': jnp.zeros_like(w)}, s, p))
  counts = []
  for _ in range(end - 2800 + 2):
    updates, state = step(params, state)
    params = optax.apply_updates(params, updates)
    counts.append(int(jnp.sum(params['w'] != 0)))
  assert counts[0] >= final_q  # never below the final Q before the end
  assert counts[-1] == final_q and counts[-2] == final_q
  assert int(jnp.sum(state.masks['w'])) == final_q
