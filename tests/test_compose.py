"""GSM inside the Optax and Flax machinery users already have."""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import gsm_optax


def problem():
  rng = np.random.default_rng(0)
  params = {'w': jnp.asarray(rng.normal(size=(12, 6)), jnp.float32),
            'b': jnp.asarray(rng.normal(size=(6,)), jnp.float32)}
  x = jnp.asarray(rng.normal(size=(32, 12)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(32, 6)), jnp.float32)
  loss = lambda p: jnp.mean((x @ p['w'] + p['b'] - y) ** 2)
  return params, jax.grad(loss)


def run(tx, params, grad_fn, steps):
  state = tx.init(params)
  @jax.jit
  def step(p, s):
    u, s = tx.update(grad_fn(p), s, p)
    return optax.apply_updates(p, u), s
  for _ in range(steps):
    params, state = step(params, state)
  return params, state


def test_inject_hyperparams_matches_and_ratio_changes_without_recompile():
  params, grad_fn = problem()
  plain, _ = run(gsm_optax.gsm(0.05, 6.0, momentum=0.9, weight_decay=1e-3),
                 params, grad_fn, 10)
  tx = optax.inject_hyperparams(gsm_optax.gsm)(
      learning_rate=0.05, ratio=6.0, momentum=0.9, weight_decay=1e-3)
  injected, state = run(tx, params, grad_fn, 10)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               plain, injected)
  assert int(state.inner_state[0].num_active) == 72 // 6

  update = jax.jit(tx.update)
  g = grad_fn(params)
  for ratio, expected in ((6.0, 12), (3.0, 24), (72.0, 1)):
    state.hyperparams['ratio'] = jnp.asarray(ratio)
    _, new_state = update(g, state, params)
    assert int(new_state.inner_state[0].num_active) == expected
  assert update._cache_size() == 1  # pylint: disable=protected-access


def test_multisteps_accumulates_then_applies_gsm():
  params, grad_fn = problem()
  tx = optax.MultiSteps(gsm_optax.gsm(0.1, 4.0), every_k_schedule=3)
  state = tx.init(params)
  p = params
  for i in range(3):
    u, state = tx.update(grad_fn(params), state, p)  # same gradient 3 times
    if i < 2:
      assert all(np.all(x == 0) for x in jax.tree.leaves(u))
  direct, _ = gsm_optax.gsm(0.1, 4.0).update(
      grad_fn(params), gsm_optax.gsm(0.1, 4.0).init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               u, direct)


def test_apply_if_finite_skips_a_nan_gradient():
  params, grad_fn = problem()
  tx = optax.apply_if_finite(gsm_optax.gsm(0.1, 4.0), max_consecutive_errors=5)
  state = tx.init(params)
  bad = jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.nan),
                     grad_fn(params))
  u, state = jax.jit(tx.update)(bad, state, params)
  assert int(state.notfinite_count) == 1
  assert all(np.all(x == 0) for x in jax.tree.leaves(u))


def test_nan_score_stays_active_so_it_is_not_hidden():
  params = {'w': jnp.ones((3, 3))}
  grads = {'w': jnp.ones((3, 3)).at[2, 2].set(jnp.nan)}
  tx = gsm_optax.keep_top_taylor(9.0)  # Q = 1: the NaN outranks everything
  u, state = tx.update(grads, tx.init(params), params)
  assert np.isnan(u['w'][2, 2]) and int(state.num_active) == 1
  assert np.isnan(state.threshold)
  assert np.count_nonzero(np.asarray(u['w'])[:2]) == 0


class MLP(nnx.Module):
  def __init__(self, rngs):
    self.l1 = nnx.Linear(8, 16, rngs=rngs)
    self.l2 = nnx.Linear(16, 2, rngs=rngs)

  def __call__(self, x):
    return self.l2(nnx.relu(self.l1(x)))


def test_flax_nnx_optimizer():
  model = MLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, gsm_optax.gsm(0.05, 8.0, momentum=0.9),
                            wrt=nnx.Param)
  x = jnp.ones((4, 8))
  y = jnp.zeros((4, 2))

  @nnx.jit
  def train_step(model, optimizer):
    grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)

  for _ in range(3):
    train_step(model, optimizer)
  mask_state = optimizer.opt_state[0]
  assert int(mask_state.num_active[...]) == (8 * 16 + 16 * 2) // 8
  assert float(mask_state.threshold[...]) > 0


def test_ratio_schedule_through_inject_hyperparams():
  # A ratio warm-up: 1x (dense) for 2 steps, then linearly to 12x by step 6.
  params, grad_fn = problem()
  schedule = optax.join_schedules(
      [optax.constant_schedule(1.0), optax.linear_schedule(1.0, 12.0, 4)], [2])
  tx = optax.inject_hyperparams(gsm_optax.gsm)(learning_rate=0.01,
                                               ratio=schedule)
  state = tx.init(params)
  update = jax.jit(tx.update)
  active = []
  for _ in range(8):
    _, state = update(grad_fn(params), state, params)
    active.append(int(state.inner_state[0].num_active))
  expected = [int(np.floor(72 / float(schedule(i)))) for i in range(8)]
  assert active == expected
  assert active[:2] == [72, 72] and active[-1] == 6


def test_traced_ratio_gives_exact_q_despite_float32_rounding():
  params = {'w': jnp.ones((532, 500))}  # N = 266,000
  grads = {'w': jnp.asarray(np.random.default_rng(0).random((532, 500)),
                            jnp.float32)}
  update = jax.jit(lambda r: gsm_optax.keep_top_taylor(r).update(
      grads, gsm_optax.keep_top_taylor(5.0).init(params), params)[1])
  one_fifth = jnp.float32(0.2)  # 1 / 0.2f rounds to 5.0 in float32
  assert int(update(1.0 / one_fifth).num_active) == 266_000 // 5
  for ratio in (3.0, 7.0, 60.0, 125.0):
    assert int(update(jnp.float32(ratio)).num_active) == int(
        np.floor(266_000 / ratio))


def test_find_mask_state_under_every_wrapper():
  params, grad_fn = problem()
  g = grad_fn(params)
  wrappers = {
      'plain': gsm_optax.gsm(0.1, 6.0),
      'inject_hyperparams': optax.inject_hyperparams(gsm_optax.gsm)(
          learning_rate=0.1, ratio=6.0),
      'multi_steps': optax.MultiSteps(gsm_optax.gsm(0.1, 6.0), 1),
      'apply_if_finite': optax.apply_if_finite(gsm_optax.gsm(0.1, 6.0), 3),
      'chain': optax.chain(optax.clip_by_global_norm(1.0),
                           gsm_optax.gsm(0.1, 6.0)),
      'mask_alone': gsm_optax.keep_top_taylor(6.0),
  }
  for name, tx in wrappers.items():
    _, state = tx.update(g, tx.init(params), params)
    found = gsm_optax.find_mask_state(state)
    assert isinstance(found, gsm_optax.KeepTopTaylorState), name
    assert int(found.num_active) == 72 // 6, name
    assert float(found.threshold) > 0, name
  assert gsm_optax.find_mask_state(optax.sgd(0.1).init(params)) is None

  model = MLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.MultiSteps(
      gsm_optax.gsm(0.05, 8.0), 1), wrt=nnx.Param)
  grads = nnx.grad(lambda m: jnp.mean(m(jnp.ones((4, 8))) ** 2))(model)
  optimizer.update(model, grads)
  found = gsm_optax.find_mask_state(optimizer.opt_state)
  assert int(found.num_active[...]) == (8 * 16 + 16 * 2) // 8
