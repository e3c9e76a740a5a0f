"""N:M patterns: one battery over every pruner, the report, the file, and
the errors that name the leaf and the fix."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gsm_optax


def params(seed=0):
  k = jax.random.split(jax.random.key(seed), 3)
  return {'w1': jax.random.normal(k[0], (16, 24)), 'b1': jnp.zeros(24),
          'conv': {'kernel': jax.random.normal(k[1], (3, 3, 8, 4))},
          'w2': jax.random.normal(k[2], (24, 8))}


def forward(p, x):
  h = jax.nn.relu(x @ p['w1'] + p['b1'])
  return h @ p['w2']


def blocks_of(x, m, axis):
  moved = np.moveaxis(np.asarray(x), axis, -1)
  return moved.reshape(-1, m)


def assert_exactly_n_of_m(mask, n, m, axis=-2):
  per_block = blocks_of(mask, m, axis).sum(-1)
  assert (per_block == n).all(), np.unique(per_block)


def grads(p):
  x = jax.random.normal(jax.random.key(9), (32, 16))
  g = jax.grad(lambda q: jnp.sum(forward(q, x) ** 2) + jnp.sum(
      q['conv']['kernel'] ** 3))(p)
  return g


def prune_mask(p, pattern):
  return gsm_optax.prune(p, pattern=pattern)[1]


def gsm_mask(p, pattern):
  tx = gsm_optax.keep_top_taylor(pattern=pattern)
  updates, _ = tx.update(grads(p), tx.init(p), p)
  return jax.tree.map(lambda u: u != 0, updates)


def global_sparse_mask(p, pattern):
  tx = gsm_optax.global_sparse(optax.sgd(0.0), pattern=pattern,
                               passive_decay=0.5)
  updates, _ = tx.update(grads(p), tx.init(p), p)
  new = optax.apply_updates(p, updates)
  return jax.tree.map(lambda a, b: a == b, new, p)  # active: not decayed


def gradual_mask(p, pattern):
  tx = gsm_optax.gradual_magnitude_pruning(None, 0, 4, update_every=2,
                                           pattern=pattern)
  state = tx.init(p)
  for _ in range(6):
    updates, state = tx.update(jax.tree.map(jnp.zeros_like, p), state, p)
    p = optax.apply_updates(p, updates)
  for leaf in ('w1', 'w2'):  # the pruned weights are zero
    np.testing.assert_array_equal(p[leaf] != 0, state.masks[leaf])
  return state.masks


PRUNERS = {'prune': prune_mask, 'keep_top_taylor': gsm_mask,
           'global_sparse': global_sparse_mask, 'gradual': gradual_mask}


@pytest.mark.parametrize('pattern', ['2:4', '1:4', '4:8', '3:8'])
@pytest.mark.parametrize('pruner', sorted(PRUNERS))
def test_every_pruner_keeps_exactly_n_of_every_m(pruner, pattern):
  n, m = map(int, pattern.split(':'))
  p = params()
  mask = PRUNERS[pruner](p, pattern)
  for leaf in ('w1', 'w2'):
    assert_exactly_n_of_m(mask[leaf], n, m)
  assert_exactly_n_of_m(mask['conv']['kernel'], n, m)
  assert np.asarray(mask['b1']).all()


@pytest.mark.parametrize('method', ['magnitude', 'wanda', 'sparsegpt'])
@pytest.mark.parametrize('pattern', ['2:4', '4:8', '1:8'])
def test_every_one_shot_method_keeps_exactly_n_of_every_m(method, pattern):
  n, m = map(int, pattern.split(':'))
  p = {k: v for k, v in params().items() if k != 'conv'}
  x = jax.random.normal(jax.random.key(3), (40, 16))
  pruned, masks = gsm_optax.one_shot_prune(forward, p, x, method=method,
                                           pattern=pattern, blocksize=8)
  for leaf in ('w1', 'w2'):
    assert_exactly_n_of_m(masks[leaf], n, m)
    assert (blocks_of(pruned[leaf] != 0, m, 0).sum(-1) <= n).all()


def test_gsm_keeps_the_n_largest_taylor_scores_of_each_block():
  p = params(1)
  g = grads(p)
  tx = gsm_optax.gsm(0.1, pattern=gsm_optax.NM(2, 4), momentum=0.0,
                     weight_decay=0.0)
  updates, state = tx.update(g, tx.init(p), p)
  score = np.abs(np.asarray(g['w1']) * np.asarray(p['w1']))
  blocks = blocks_of(score, 4, 0)
  order = np.argsort(blocks, axis=1, kind='stable')
  want = np.zeros_like(blocks, bool)
  np.put_along_axis(want, order[:, 2:], True, axis=1)
  got = blocks_of(np.asarray(updates['w1']) != 0, 4, 0)
  np.testing.assert_array_equal(got, want)
  assert int(state[0].num_active) == (16 * 24 + 24 * 8 + 3 * 3 * 8 * 4) // 2


def test_ties_keep_the_later_entry_and_nan_ranks_first():
  from gsm_optax._src.spec.pattern import keep_in_blocks
  x = jnp.array([[1., 1., 1., 1., jnp.nan, 0., 5., jnp.inf]])
  keep = keep_in_blocks(x, 2, 4, 1)
  assert keep.tolist() == [[False, False, True, True,
                            True, False, False, True]]


def test_the_report_shows_the_pattern_and_the_file_round_trips_bit_exact(
    tmp_path):
  rng = np.random.default_rng(0)
  p = {'w': jnp.asarray(rng.normal(size=(256, 256)), jnp.float32),
       'b': jnp.ones(256), 'e': jnp.asarray(rng.normal(size=(10, 6)))}
  pruned, _ = gsm_optax.prune(p, pattern='2:4',
                              prunable={'w': True, 'b': False, 'e': False})
  pruned['w'] = pruned['w'].at[1, 0].set(-0.0).at[3, 0].set(0.0)
  report = gsm_optax.sparsity_report(pruned, pattern='2:4')
  rows = {l.path: l for l in report.leaves}
  assert rows["['w']"].pattern == '2:4' and rows["['e']"].pattern == ''
  assert '2:4' in str(report)
  dense_bytes = 256 * 256 * 4
  assert rows["['w']"].sparse_nbytes == 256 * 256 // 2 * 4 + 256 * 256 // 8
  path = str(tmp_path / 'nm.npz')
  size = gsm_optax.save_sparse(path, pruned, pattern='2:4')
  assert size <= 0.6 * dense_bytes, size / dense_bytes
  back = gsm_optax.load_sparse(path)
  for a, b in zip(jax.tree.leaves(pruned), jax.tree.leaves(back)):
    a = np.asarray(a)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
  assert np.signbit(back['w'][1, 0]) and back['w'][1, 0] == 0


@pytest.mark.parametrize('pattern,axis', [('2:4', None), ('3:16', 1),
                                          ('5:8', 0)])
def test_the_file_stores_other_patterns_and_axes(tmp_path, pattern, axis):
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.normal(size=(32, 48)), jnp.float32).astype(jnp.bfloat16)
  nm = gsm_optax.NM(*map(int, pattern.split(':')), axis=axis)
  pruned, _ = gsm_optax.prune({'w': w}, pattern=nm)
  path = str(tmp_path / 'f.npz')
  gsm_optax.save_sparse(path, pruned, pattern=nm)
  back = gsm_optax.load_sparse(path)
  np.testing.assert_array_equal(np.asarray(pruned['w']).view(np.uint16),
                                back['w'].view(np.uint16))


def test_errors_name_the_argument_the_leaf_and_the_fix():
  p = params()
  with pytest.raises(ValueError, match=r"\['w2'\] has shape \(24, 8\).*"
                     'M=16 do not divide'):
    gsm_optax.prune({'w2': p['w2']}, pattern='2:16')
  with pytest.raises(ValueError, match='1 <= N < M'):
    gsm_optax.prune(p, pattern='4:4')
  with pytest.raises(ValueError, match="'N:M'"):
    gsm_optax.gsm(0.1, pattern='2-4')
  with pytest.raises(ValueError, match='does not match `pattern` 2:4'):
    gsm_optax.gsm(0.1, ratio=3.0, pattern='2:4')
  with pytest.raises(ValueError, match='got None. It may be left out only with a `pattern`'):
    gsm_optax.gsm(0.1)
  with pytest.raises(ValueError, match=r"\['q'\] has shape \(8, 2, 4\).*"
                     'axis=...'):
    gsm_optax.prune({'q': jnp.ones((8, 2, 4))}, pattern='2:4')
  with pytest.raises(ValueError, match='pass one of them'):
    gsm_optax.prune(p, pattern='2:4', groups=object())
  with pytest.raises(ValueError, match="`budget` must be 'params', 'flops' or 'latency'"):
    gsm_optax.prune(p, 2.0, budget='flop')


def test_one_shot_errors_name_the_argument_the_leaf_and_the_fix():
  p = {k: v for k, v in params().items() if k != 'conv'}
  x = jnp.ones((8, 16))
  with pytest.raises(ValueError, match='no kernel to prune'):
    gsm_optax.one_shot_prune(lambda q, x: x, p, x, 2.0)
  with pytest.raises(ValueError, match='could not run `forward'):
    gsm_optax.one_shot_prune(forward, p, jnp.ones((8, 5)), 2.0)
  with pytest.raises(ValueError, match="`method` must be one of"):
    gsm_optax.one_shot_prune(forward, p, x, 2.0, method='obs')
  with pytest.raises(ValueError, match=r"\['w2'\] has shape \(24, 8\).*"
                     'M=16 do not divide'):
    gsm_optax.one_shot_prune(forward, p, x, pattern='2:16')
  with pytest.raises(ValueError, match="leave `allocation='uniform'`"):
    gsm_optax.one_shot_prune(forward, p, x, pattern='2:4',
                             allocation='global')
  conv = {'k': jnp.ones((3, 3, 2, 4))}
  conv_forward = lambda q, x: jax.lax.conv_general_dilated(
      x, q['k'], (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  with pytest.raises(ValueError, match=r"\['k'\] is used in a convolution.*"
                     "method='magnitude'"):
    gsm_optax.one_shot_prune(conv_forward, conv, jnp.ones((2, 5, 5, 2)), 2.0)
  with pytest.raises(ValueError, match=r"\['table'\] is marked prunable.*"
                     'no matmul'):
    gsm_optax.one_shot_prune(
        lambda q, t: q['table'][t] @ q['w'],
        {'table': jnp.ones((10, 4)), 'w': jnp.ones((4, 3))},
        jnp.zeros((4, 2), int), 2.0, prunable={'table': True, 'w': True})
  singular = {'w': jnp.ones((4, 3))}
  with pytest.raises(ValueError, match=r"\['w'\]: the dampened Hessian.*"
                     'Raise `damping`'):
    gsm_optax.one_shot_prune(lambda q, x: x @ q['w'], singular,
                             jnp.ones((6, 4)), 2.0, method='sparsegpt',
                             damping=0.0)
