"""Final global magnitude prune and the per-layer sparsity report."""

import jax.numpy as jnp
import numpy as np
import pytest

import gsm_optax


@pytest.mark.parametrize('ratio', [1.0, 4.0, 33.0])
@pytest.mark.parametrize('method', gsm_optax.SELECTION_METHODS)
def test_prune_keeps_q_largest_magnitudes_globally(ratio, method):
  rng = np.random.default_rng(0)
  params = {'a': rng.normal(size=(20, 10)).astype(np.float32),
            'b': (rng.normal(size=(3, 3, 4, 4)) * 0.1).astype(np.float32),
            'bias': rng.normal(size=(10,)).astype(np.float32)}
  pruned, masks = gsm_optax.prune(params, ratio, method=method)
  n = 200 + 144
  q = int(np.floor(n / ratio))
  mags = np.concatenate([np.abs(params['a']).ravel(), np.abs(params['b']).ravel()])
  t = np.sort(mags)[::-1][q - 1]
  for k in ('a', 'b'):
    np.testing.assert_array_equal(masks[k], np.abs(params[k]) >= t)
    np.testing.assert_array_equal(pruned[k], np.where(masks[k], params[k], 0))
  np.testing.assert_array_equal(pruned['bias'], params['bias'])
  assert np.all(masks['bias'])
  report = gsm_optax.sparsity_report(pruned)
  assert report.prunable_nonzero == q
  assert report.compression == pytest.approx(n / q)


def test_prune_keeps_ties():
  params = {'w': jnp.array([[3.0, 1.0], [1.0, 1.0]])}
  pruned, _ = gsm_optax.prune(params, ratio=2.0)  # Q = 2, three tied at 1
  np.testing.assert_array_equal(pruned['w'], params['w'])


def test_sparsity_report_totals_and_table():
  params = {'dense': {'kernel': np.array([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0]]),
                      'bias': np.array([0.0, 1.0, 1.0])},
            'conv': {'kernel': np.zeros((2, 2, 1, 1))}}
  report = gsm_optax.sparsity_report(params)
  rows = {l.path: l for l in report.leaves}
  assert rows["['dense']['kernel']"].nonzero == 3
  assert rows["['dense']['kernel']"].density == pytest.approx(0.5)
  assert rows["['conv']['kernel']"].density == 0.0
  assert not rows["['dense']['bias']"].prunable
  assert (report.total_size, report.total_nonzero) == (13, 5)
  assert (report.prunable_size, report.prunable_nonzero) == (10, 3)
  assert report.compression == pytest.approx(10 / 3)
  data = report.to_dict()
  assert data['prunable_nonzero'] == 3 and len(data['leaves']) == 3
  table = str(report)
  assert "['dense']['kernel']" in table and '50.00%' in table
  assert 'compression (prunable weights): 3.3x' in table
  assert '(not prunable)' in table


def test_fixed_mask_keeps_pruned_weights_at_zero_under_sgd_with_decay():
  import jax
  import optax
  rng = np.random.default_rng(1)
  params = {'w': jnp.asarray(rng.normal(size=(6, 5)), jnp.float32),
            'b': jnp.asarray(rng.normal(size=(5,)), jnp.float32)}
  pruned, masks = gsm_optax.prune(params, ratio=3.0)
  tx = optax.chain(gsm_optax.fixed_mask(masks),
                   optax.add_decayed_weights(1e-2),
                   optax.sgd(0.1, momentum=0.9))
  state = tx.init(pruned)
  p = pruned
  for _ in range(5):
    grads = jax.tree.map(lambda x: jnp.ones_like(x), p)
    u, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, u)
  np.testing.assert_array_equal(np.asarray(p['w'])[~np.asarray(masks['w'])], 0)
  assert np.all(np.asarray(p['w'])[np.asarray(masks['w'])] !=
                np.asarray(pruned['w'])[np.asarray(masks['w'])])
  assert np.all(p['b'] != pruned['b'])  # non-prunable leaves keep training
