"""Final global magnitude prune and the per-layer sparsity report."""

import jax
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
  with pytest.warns(UserWarning, match='2 more tie at the threshold'):
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


def official_final_prune(params, nonzero_ratio):
  """The official get_mask_by_magnitude, restated in NumPy."""
  ranked = [v for v in params.values() if np.ndim(v) in (2, 4)]
  all_abs = np.concatenate([np.abs(v).ravel() for v in ranked])
  num_zero = int(len(all_abs) * (1 - nonzero_ratio))
  thresh = sorted(all_abs)[num_zero]
  return {k: (np.abs(v) >= thresh) if np.ndim(v) in (2, 4) else
          np.ones(np.shape(v), bool) for k, v in params.items()}


@pytest.mark.parametrize('ratio', [60.0, 7.0, 3.0, 125.0, 1.0, 300.0])
def test_official_count_and_prunable_reproduce_the_official_prune(ratio):
  rng = np.random.default_rng(3)
  params = {'fc': rng.normal(size=(300, 100)).astype(np.float32),
            'conv': rng.normal(size=(3, 3, 8, 16)).astype(np.float32),
            'conv1d': rng.normal(size=(5, 8, 16)).astype(np.float32),
            'bias': rng.normal(size=(100,)).astype(np.float32)}
  expected = official_final_prune(params, 1 / ratio)
  _, masks = gsm_optax.prune(params, ratio, count='official',
                             prunable=gsm_optax.official_prunable)
  for k in params:
    np.testing.assert_array_equal(masks[k], expected[k], err_msg=k)
  n = 300 * 100 + 3 * 3 * 8 * 16
  kept = sum(int(masks[k].sum()) for k in ('fc', 'conv'))
  assert kept == gsm_optax.official_num_to_keep(n, ratio)
  # The default keeps floor(N / C): one fewer when C does not divide N.
  _, floor_masks = gsm_optax.prune(params, ratio,
                                   prunable=gsm_optax.official_prunable)
  floor_kept = sum(int(floor_masks[k].sum()) for k in ('fc', 'conv'))
  assert floor_kept == n // int(ratio)
  assert kept - floor_kept == (0 if n % int(ratio) == 0 else 1)


def test_official_count_on_lenet300_is_one_more_than_floor():
  assert gsm_optax.official_num_to_keep(266_200, 60.0) == 4437
  assert gsm_optax.num_to_keep(266_200, 60.0) == 4436


def test_official_recipes_name_the_official_leaves():
  params = {'Conv_0': {'kernel': np.ones((3, 3, 2, 4)), 'bias': np.ones(4)},
            'Conv1d': {'kernel': np.ones((3, 2, 4))},
            'bn1': {'scale': np.ones(4)}, 'BN_2': {'scale': np.ones(4)},
            'LayerNorm_0': {'scale': np.ones(4)},
            'Dense_0': {'kernel': np.ones((4, 2))}}
  assert gsm_optax.official_prunable(params) == {
      'Conv_0': {'kernel': True, 'bias': False}, 'Conv1d': {'kernel': False},
      'bn1': {'scale': False}, 'BN_2': {'scale': False},
      'LayerNorm_0': {'scale': False}, 'Dense_0': {'kernel': True}}
  assert gsm_optax.official_weight_decay_mask(params) == {
      'Conv_0': {'kernel': True, 'bias': False}, 'Conv1d': {'kernel': True},
      'bn1': {'scale': False}, 'BN_2': {'scale': False},
      'LayerNorm_0': {'scale': True}, 'Dense_0': {'kernel': True}}


def test_biases_are_never_ranked_whatever_their_shape():
  import flax.nnx as nnx  # pylint: disable=import-outside-toplevel

  class Block(nnx.Module):

    def __init__(self, rngs):
      self.embed = nnx.Embed(20, 16, rngs=rngs)
      self.attention = nnx.MultiHeadAttention(4, 16, decode=False, rngs=rngs)
      self.norm = nnx.LayerNorm(16, rngs=rngs)

  model = Block(nnx.Rngs(0))
  for params in (nnx.state(model, nnx.Param),  # paths end in .value
                 nnx.to_pure_dict(nnx.state(model, nnx.Param))):
    flags = gsm_optax.default_prunable(params)
    flat = {jax.tree_util.keystr(p).replace('.value', ''): f for p, f in
            jax.tree_util.tree_flatten_with_path(flags)[0]}
    ranked = sorted(k for k, f in flat.items() if f)
    assert ranked == ["['attention']['key']['kernel']",
                      "['attention']['out']['kernel']",
                      "['attention']['query']['kernel']",
                      "['attention']['value']['kernel']",
                      "['embed']['embedding']"]
    # q/k/v biases are (heads, head_dim): 2-D, and still not ranked.
    assert np.ndim(nnx.to_pure_dict(nnx.state(model, nnx.Param))[
        'attention']['query']['bias']) == 2
  report = gsm_optax.sparsity_report(
      nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  marked = {l.path for l in report.leaves if not l.prunable}
  assert "['attention']['query']['bias']" in marked
  assert "['attention']['query']['bias']" in [
      line.split()[0] for line in str(report).splitlines()
      if line.endswith('(not prunable)')]


def test_structure_report_table_has_no_blank_columns():
  # Families show channels, kernels params and FLOPs: each row fills every
  # column of its own table's header.
  params = {'w1': jnp.ones((4, 8)).at[:, :3].set(0.0), 'b1': jnp.zeros(8),
            'w2': jnp.ones((8, 3)).at[:3].set(0.0)}
  mlp = lambda p, x: jax.nn.relu(x @ p['w1'] + p['b1']) @ p['w2']
  groups = gsm_optax.find_groups(mlp, params, jnp.ones((2, 4)))
  lines = str(gsm_optax.structure_report(params, groups)).splitlines()
  assert lines[0].split()[1:] == ['channels', 'kept', '/', 'all']
  assert lines[1].split()[-3:] == ['5', '/', '8']
  assert lines[2].split()[1:] == ['params', 'kept', '/', 'all', 'FLOPs',
                                  'kept', '/', 'all']
  rows = {l.split()[0]: l.split()[1:] for l in lines[3:5]}
  assert rows["['w1']"] == ['20', '/', '32', '80', '/', '128']
  assert rows["['w2']"] == ['15', '/', '24', '60', '/', '96']


def test_report_says_its_bytes_are_before_the_files_deflation():
  # The demo printed '40x smaller' (the file) beside '37.0x smaller' (this
  # report) for one model: each figure now says what it measures.
  report = gsm_optax.sparsity_report({'w': jnp.zeros((64, 64)).at[0].set(1.)})
  assert 'as save_sparse stores them before deflating the file' in str(report)
