"""Churn, the prune diagnostic, and the smoothed ranking (off by default).

Each is checked against an independent NumPy statement of what it promises.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from reference import kth_largest

import gsm_optax

SHAPES = {'a': (6, 5), 'b': (4, 3, 2), 'bias': (5,)}


def random_tree(rng, scale=1.0):
  return {k: (scale * rng.normal(size=s)).astype(np.float32)
          for k, s in SHAPES.items()}


def reference_masks(scores, q):
  """Top q of the concatenated scores, ties kept."""
  t = kth_largest(np.concatenate([s.ravel() for s in scores.values()]), q)
  return {k: s >= t for k, s in scores.items()}


def run_steps(tx, params, grads_seq):
  state = tx.init(params)
  step = jax.jit(tx.update)
  out = []
  for grads in grads_seq:
    updates, state = step(grads, state, params)
    out.append((jax.tree.map(np.asarray, updates), state))
  return out


def test_churn_counts_the_weights_that_entered_the_active_set():
  rng = np.random.default_rng(0)
  params = random_tree(rng)
  grads_seq = [random_tree(rng) for _ in range(5)]
  ratio = 4.0
  q = int((30 + 24) // ratio)
  plain = run_steps(gsm_optax.keep_top_taylor(ratio), params, grads_seq)
  churn = run_steps(gsm_optax.keep_top_taylor(ratio, track_churn=True),
                    params, grads_seq)
  before = {k: np.zeros(s, bool) for k, s in SHAPES.items() if k != 'bias'}
  for grads, (u_plain, _), (u, state) in zip(grads_seq, plain, churn):
    masks = reference_masks({k: np.abs(grads[k] * params[k])
                             for k in before}, q)
    entered = sum(int(np.sum(masks[k] & ~before[k])) for k in masks)
    assert int(state.num_entered) == entered
    for k, m in zip(sorted(before), state.active):
      np.testing.assert_array_equal(m, masks[k])
    jax.tree.map(np.testing.assert_array_equal, u, u_plain)  # same updates
    before = masks
  assert int(churn[0][1].num_entered) == int(churn[0][1].num_active)
  assert 0 < int(churn[-1][1].num_entered) < int(churn[-1][1].num_active)


@pytest.mark.parametrize('decay', [0.9, optax.linear_schedule(0.5, 0.95, 3)])
def test_smoothed_ranking_is_the_top_q_of_the_averaged_gradient(decay):
  rng = np.random.default_rng(1)
  params = random_tree(rng)
  grads_seq = [random_tree(rng) for _ in range(5)]
  ratio = 3.0
  q = int((30 + 24) // ratio)
  tx = gsm_optax.keep_top_taylor(ratio, score_decay=decay)
  trace = {k: np.zeros(s, np.float32) for k, s in SHAPES.items()
           if k != 'bias'}
  for t, (grads, (updates, state)) in enumerate(zip(
      grads_seq, run_steps(tx, params, grads_seq))):
    d = np.float32(decay(t) if callable(decay) else decay)
    trace = {k: d * m + (1 - d) * grads[k] for k, m in trace.items()}
    for k, m in zip(sorted(trace), state.score_trace):
      np.testing.assert_allclose(m, trace[k], rtol=1e-5, atol=1e-6)
      trace[k] = np.asarray(m)  # rank the library's own average: exact
    masks = reference_masks({k: np.abs(m * params[k])
                             for k, m in trace.items()}, q)
    for k, m in masks.items():  # the current gradient passes where ranked
      np.testing.assert_array_equal(updates[k], np.where(m, grads[k], 0))
    np.testing.assert_array_equal(updates['bias'], grads['bias'])
    assert int(state.count) == t + 1
    assert int(state.num_active) == sum(int(m.sum()) for m in masks.values())
  # And it is not the paper's rule: the masks differ at the last step.
  paper = reference_masks({k: np.abs(grads_seq[-1][k] * params[k])
                           for k in trace}, q)
  assert any((paper[k] != masks[k]).any() for k in masks)


def test_options_cost_nothing_when_off_and_one_array_a_leaf_when_on():
  params = random_tree(np.random.default_rng(2))
  plain = gsm_optax.keep_top_taylor(2.0).init(params)
  assert len(jax.tree.leaves(plain)) == 2  # threshold and num_active
  both = gsm_optax.keep_top_taylor(2.0, score_decay=0.99,
                                   track_churn=True).init(params)
  assert [m.shape for m in both.score_trace] == [SHAPES['a'], SHAPES['b']]
  assert all(m.dtype == jnp.float32 for m in both.score_trace)
  assert [m.dtype for m in both.active] == [jnp.bool_, jnp.bool_]


def test_options_compose_with_gsm_and_optax_wrappers():
  rng = np.random.default_rng(3)
  params = random_tree(rng)
  grads = random_tree(rng)
  wrapped = {
      'gsm': gsm_optax.gsm(0.1, 3.0, score_decay=0.9, track_churn=True),
      'inject_hyperparams': optax.inject_hyperparams(
          gsm_optax.gsm, static_args=('track_churn',))(
              learning_rate=0.1, ratio=3.0, score_decay=0.9,
              track_churn=True),
      'multi_steps': optax.MultiSteps(
          gsm_optax.gsm(0.1, 3.0, score_decay=0.9, track_churn=True), 1),
      'apply_if_finite': optax.apply_if_finite(
          gsm_optax.gsm(0.1, 3.0, score_decay=0.9, track_churn=True), 2),
  }
  results = {}
  for name, tx in wrapped.items():
    (updates, state), = run_steps(tx, params, [grads])
    found = gsm_optax.find_mask_state(state)
    assert found is not None and int(found.count) == 1, name
    assert int(found.num_entered) == int(found.num_active), name
    results[name] = updates
  for name, updates in results.items():
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
                 updates, results['gsm'])


def test_score_decay_errors_name_the_argument():
  with pytest.raises(ValueError, match='`score_decay`.*0.99'):
    gsm_optax.keep_top_taylor(2.0, score_decay=1.0)
  with pytest.raises(ValueError, match='`score_decay`'):
    gsm_optax.gsm(0.1, 2.0, score_decay=-0.1)
  with pytest.raises(TypeError, match='`score_decay`'):
    gsm_optax.keep_top_taylor(2.0, score_decay='0.9')
  with pytest.raises(TypeError, match='`score_decay`'):
    gsm_optax.keep_top_taylor(2.0, score_decay=True)


@pytest.mark.parametrize('ratio', [1.0, 2.0, 7.0, 54.0])
def test_pruned_norm_share_matches_numpy(ratio):
  rng = np.random.default_rng(4)
  params = random_tree(rng)
  params['a'][0, :3] = 0.25  # ties
  params['b'][0, 0, :] = 0.25
  ranked = np.concatenate([params['a'].ravel(), params['b'].ravel()])
  q = int(len(ranked) // ratio)
  kept = np.abs(ranked) >= kth_largest(np.abs(ranked), q)
  want = np.linalg.norm(ranked[~kept]) / np.linalg.norm(ranked)
  got = gsm_optax.pruned_norm_share(params, ratio)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(
      jax.jit(gsm_optax.pruned_norm_share, static_argnums=1)(params, ratio),
      want, rtol=1e-5, atol=1e-7)
  # It is what prune removes.
  pruned, _ = gsm_optax.prune(params, ratio)
  removed = np.concatenate([(params[k] - np.asarray(pruned[k])).ravel()
                            for k in ('a', 'b')])
  np.testing.assert_allclose(np.linalg.norm(removed) / np.linalg.norm(ranked),
                             want, rtol=1e-5, atol=1e-7)


def test_pruned_norm_share_of_zeros_and_of_decayed_passive_weights():
  zeros = {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}
  assert float(gsm_optax.pruned_norm_share(zeros, 2.0)) == 0.0
  params = random_tree(np.random.default_rng(5))
  params['b'] *= 1e-4  # the passive half has decayed: little left to remove
  # Q = floor(54 / 1.75) = 30 keeps exactly the 30 weights of `a`.
  assert float(gsm_optax.pruned_norm_share(params, 1.75)) < 1e-3
  assert float(gsm_optax.pruned_norm_share(params, 2.0)) > 1e-2


def test_check_final_prune_warns_above_the_tolerance_with_the_fix():
  rng = np.random.default_rng(5)
  w = rng.normal(size=(40, 30)).astype(np.float32)
  ratio = 10.0
  q = w.size // 10
  t = kth_largest(np.abs(w).ravel(), q)
  settled = {'w': np.where(np.abs(w) >= t, w, 1e-4 * w)}  # passive ~ 0
  check = gsm_optax.check_final_prune(settled, ratio, warn=False)
  expected = np.sqrt(np.sum(np.where(np.abs(w) >= t, 0, 1e-4 * w)**2) /
                     np.sum(settled['w']**2))
  assert check.ok and check.message is None
  np.testing.assert_allclose(check.share, expected, rtol=1e-3)
  with pytest.warns(gsm_optax.PruneCostWarning,
                    match=r'would remove .*% of the kernels\' norm.*'
                    r'score_decay=0\.9\).*passive_decay'):
    check = gsm_optax.check_final_prune({'w': w}, ratio)
  assert not check.ok and check.share > 0.5
  # The tolerance is the line: just below the share it warns, above not.
  assert not gsm_optax.check_final_prune({'w': w}, ratio, check.share * 0.99,
                                         warn=False).ok
  assert gsm_optax.check_final_prune({'w': w}, ratio, check.share * 1.01,
                                     warn=False).ok
  # The default line is 2% of the norm: passive weights scaled to hold 1.5%
  # pass, to 2.5% warn.
  active = np.abs(w) >= t
  a, b = np.linalg.norm(w[~active]), np.linalg.norm(w[active])
  for share, ok in ((0.015, True), (0.025, False)):
    c = share * b / (a * np.sqrt(1 - share**2))
    check = gsm_optax.check_final_prune({'w': np.where(active, w, c * w)},
                                        ratio, warn=False)
    np.testing.assert_allclose(check.share, share, rtol=1e-4)
    assert check.ok == ok


def test_check_final_prune_judges_by_the_outputs_when_given_the_model():
  # Rows 10-19 hold 10% of the norm and are all pruned at 2x: the norm
  # share warns. Inputs that never use those features see no change: with
  # the model and the inputs, no warning (the false alarm of issue #50).
  rng = np.random.default_rng(6)
  signs = rng.choice([-1.0, 1.0], size=(20, 5))
  w = (signs * rng.uniform(1, 2, size=(20, 5))).astype(np.float32)
  w[:10] *= 10
  params = {'w': w}
  linear = lambda p, x: x @ p['w']
  assert not gsm_optax.check_final_prune(params, 2.0, warn=False).ok
  quiet = np.zeros((300, 20), np.float32)
  quiet[:, :10] = rng.normal(size=(300, 10))
  check = gsm_optax.check_final_prune(params, 2.0, fn=linear, inputs=quiet)
  assert check.ok and check.changed == 0.0 and check.output_change < 1e-6
  # Still reported, read off the one prune: the norm of rows 10-19.
  np.testing.assert_allclose(check.share,
                             np.linalg.norm(w[10:]) / np.linalg.norm(w),
                             rtol=1e-5)
  # Inputs that lean on the pruned features: the predictions that change,
  # counted here independently, decide.
  loud = rng.normal(size=(300, 20)).astype(np.float32) * np.r_[
      np.full(10, 0.05), np.full(10, 3.0)].astype(np.float32)
  pruned = np.where(np.arange(20)[:, None] < 10, w, 0)
  flips = np.mean(np.argmax(loud @ w, 1) != np.argmax(loud @ pruned, 1))
  assert flips > 0.01
  with pytest.warns(gsm_optax.PruneCostWarning,
                    match=f'change {flips:.1%} of the predictions'):
    check = gsm_optax.check_final_prune(params, 2.0, fn=linear, inputs=loud)
  np.testing.assert_allclose(check.changed, flips)
  # A tolerance just above the flips passes; outputs that are not class
  # scores are judged by their relative change.
  assert gsm_optax.check_final_prune(params, 2.0, fn=linear, inputs=loud,
                                     output_tolerance=flips + 1e-9,
                                     warn=False).ok
  column = lambda p, x: x @ p['w'][:, :1]
  change = np.linalg.norm(loud @ (w - pruned)[:, :1]) / np.linalg.norm(
      loud @ w[:, :1])
  check = gsm_optax.check_final_prune(params, 2.0, fn=column, inputs=loud,
                                      warn=False)
  assert check.changed is None and not check.ok
  np.testing.assert_allclose(check.output_change, change, rtol=1e-5)
  assert 'outputs by' in check.message
  with pytest.raises(ValueError, match='`fn` and `inputs` go together'):
    gsm_optax.check_final_prune(params, 2.0, fn=linear)


def test_a_diverged_model_is_never_reported_ready_to_prune():
  # All-NaN weights (a run that diverged) once gave a share of 0: "free".
  w = np.ones((6, 5), np.float32)
  for bad in (np.nan, np.inf):
    params = {'w': w.copy()}
    params['w'][2, 3] = bad
    assert np.isnan(float(gsm_optax.pruned_norm_share(params, 3.0)))
    for judge in ({}, {'fn': lambda p, x: x @ p['w'],
                       'inputs': np.ones((4, 6), np.float32)}):
      check = gsm_optax.check_final_prune(params, 3.0, warn=False, **judge)
      assert not check.ok and 'NaN or inf weights' in check.message
      assert 'apply_if_finite' in check.message and np.isnan(check.share)
  assert np.isnan(float(gsm_optax.pruned_norm_share(
      {'w': np.full((6, 5), np.nan, np.float32)}, 3.0)))
