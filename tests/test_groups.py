"""`find_groups` on every example model, against hand-written expectations.

Each family is checked by its members: which parameter axes it holds and,
where a flatten or a concatenation maps channels to positions, at which
positions.
"""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import model_zoo
import numpy as np
import pytest

import gsm_optax


def groups_of(name, x):
  graphdef, params = model_zoo.model(name)
  return gsm_optax.find_groups(lambda p, x: nnx.merge(graphdef, p)(x),
                               params, x)


def members(family):
  return {(m.path, m.axis) for m in family.members}


def family_with(groups, path, axis):
  found = [f for f in groups.families if (path, axis) in members(f)]
  assert len(found) == 1, (path, axis, [f.name for f in groups.families])
  return found[0]


def member(family, path, axis):
  return next(m for m in family.members if (m.path, m.axis) == (path, axis))


def test_lenet300_neurons():
  groups = groups_of('lenet300',
                     jnp.zeros((2, 28, 28, 1)))
  assert [(f.name, f.size) for f in groups.families] == [
      ("['fc1']", 300), ("['fc2']", 100)]
  assert members(groups.families[0]) == {
      ("['fc1']['kernel']", 1), ("['fc1']['bias']", 0),
      ("['fc2']['kernel']", 0)}
  assert members(groups.families[1]) == {
      ("['fc2']['kernel']", 1), ("['fc2']['bias']", 0),
      ("['fc3']['kernel']", 0)}
  blocked = {(b.path, b.axis): b.reasons for b in groups.blocked}
  assert blocked[("['fc1']['kernel']", 0)] == ('an input of the function',)
  assert blocked[("['fc3']['kernel']", 1)] == ('an output of the function',)
  assert groups.totals['params'] == 266_610
  assert groups.totals['flops'] == 2 * 2 * (784 * 300 + 300 * 100 + 100 * 10)


def test_lenet5_channels_through_the_flatten():
  groups = groups_of('lenet5',
                     jnp.zeros((1, 28, 28, 1)))
  assert [(f.name, f.size) for f in groups.families] == [
      ("['conv1']", 20), ("['conv2']", 50), ("['fc1']", 500)]
  conv2 = groups.families[1]
  assert members(conv2) == {("['conv2']['kernel']", 3), ("['conv2']['bias']", 0),
                            ("['fc1']['kernel']", 0)}
  # NHWC (4, 4, 50) flattened: channel j becomes rows j, j + 50, ...
  rows = member(conv2, "['fc1']['kernel']", 0).index
  np.testing.assert_array_equal(rows, np.arange(800) % 50)
  assert members(groups.families[0]) == {
      ("['conv1']['kernel']", 3), ("['conv1']['bias']", 0),
      ("['conv2']['kernel']", 2)}
  spatial = {(b.path, b.axis) for b in groups.blocked
             if 'the spatial axes of a convolution' in b.reasons}
  # fc1's rows: the channels are a family, the 4 x 4 positions are not.
  assert spatial == {(f"['{c}']['kernel']", a) for c in ('conv1', 'conv2')
                     for a in (0, 1)} | {("['fc1']['kernel']", 0)}


def test_resnet56_residual_ties_and_batch_norm():
  groups = groups_of('resnet56',
                     jnp.zeros((1, 32, 32, 3)))
  # 27 blocks' inner channels, and one residual stream per stage.
  assert len(groups.families) == 30
  b = lambda i, name: f"['blocks'][{i}]['{name}']"
  stage1 = family_with(groups, "['stem']['conv']['kernel']", 3)
  expected = {("['stem']['conv']['kernel']", 3)} | {
      (f"['stem']['bn']['{k}']", 0) for k in ('scale', 'bias', 'mean', 'var')}
  for i in range(9):  # every block of the stage writes into the stream ...
    expected |= {(b(i, 'conv2') + "['conv']['kernel']", 3),
                 (b(i, 'conv1') + "['conv']['kernel']", 2)}
    expected |= {(b(i, 'conv2') + f"['bn']['{k}']", 0)
                 for k in ('scale', 'bias', 'mean', 'var')}
  # ... and the next stage's first block reads it, with its projection.
  expected |= {(b(9, 'conv1') + "['conv']['kernel']", 2),
               (b(9, 'proj') + "['conv']['kernel']", 2)}
  assert members(stage1) == expected and stage1.size == 16
  inner = family_with(groups, b(3, 'conv1') + "['conv']['kernel']", 3)
  assert members(inner) == {(b(3, 'conv1') + "['conv']['kernel']", 3),
                            (b(3, 'conv2') + "['conv']['kernel']", 2)} | {
      (b(3, 'conv1') + f"['bn']['{k}']", 0)
      for k in ('scale', 'bias', 'mean', 'var')}
  stage3 = family_with(groups, "['head']['kernel']", 0)
  assert stage3.size == 64 and (b(18, 'proj') + "['conv']['kernel']",
                                3) in members(stage3)
  assert sorted(f.size for f in groups.families) == sorted(
      [16] * 10 + [32] * 10 + [64] * 10)


def test_resnet50_bottlenecks():
  groups = groups_of('resnet50',
                     jnp.zeros((1, 64, 64, 3)))
  # 16 bottlenecks x 2 inner widths, 4 stage streams, the stem.
  assert len(groups.families) == 37
  stream = family_with(groups, "['head']['kernel']", 0)
  assert stream.size == 2048
  assert ("['blocks'][13]['proj']['conv']['kernel']", 3) in members(stream)
  assert ("['blocks'][15]['conv3']['conv']['kernel']", 3) in members(stream)
  stem = family_with(groups, "['stem']['conv']['kernel']", 3)
  assert stem.size == 64 and members(stem) >= {
      ("['blocks'][0]['conv1']['conv']['kernel']", 2),
      ("['blocks'][0]['proj']['conv']['kernel']", 2)}
  assert groups.num_groups == sum(f.size for f in groups.families) == 11_456


def test_densenet40_concatenations_offset_the_channels():
  groups = groups_of('densenet40',
                     jnp.zeros((1, 32, 32, 3)))
  # The stem, 36 layers' new channels, 2 transitions.
  assert len(groups.families) == 39
  stem = family_with(groups, "['stem']['kernel']", 3)
  assert stem.size == 16
  bn1 = member(stem, "['body'][1]['bn']['scale']", 0)  # 16 + 12 inputs
  np.testing.assert_array_equal(bn1.index, np.r_[np.arange(16),
                                                 -np.ones(12, int)])
  first = family_with(groups, "['body'][0]['conv']['kernel']", 3)
  assert first.size == 12
  later = member(first, "['body'][5]['conv']['kernel']", 2)  # 16 + 5 * 12
  np.testing.assert_array_equal(later.index, np.r_[-np.ones(16, int),
                                                   np.arange(12),
                                                   -np.ones(48, int)])
  # Every later layer of the block and the transition read it.
  assert {m.path for m in first.members} >= {
      f"['body'][{i}]['conv']['kernel']" for i in range(1, 13)}
  # Every leaf counts: 1,019,722 parameters and the batch statistics.
  _, state = model_zoo.model('densenet40')
  stats = [np.size(x) for p, x in jax.tree_util.tree_flatten_with_path(
      state)[0] if jax.tree_util.keystr(p).endswith(("['mean']", "['var']"))]
  assert groups.totals['params'] == 1_019_722 + sum(stats)


def test_transformer_heads_and_mlp_neurons():
  groups = groups_of('transformer', jnp.zeros((2, 16), jnp.int32))
  names = [(f.name, f.size) for f in groups.families]
  block = "['blocks'][0]"
  assert names[:4] == [(f"{block}['attention'] heads", 4),
                       (f"{block}['attention']['key'] head dims", 16),
                       (f"{block}['attention']['value'] head dims", 16),
                       (f"{block}['mlp_in']", 128)]
  attention = block + "['attention']"
  heads = groups.families[0]
  assert members(heads) == {(f"{attention}['{p}']['kernel']", 1)
                            for p in ('query', 'key', 'value')} | {
      (f"{attention}['{p}']['bias']", 0) for p in ('query', 'key', 'value')
  } | {(f"{attention}['out']['kernel']", 0)}
  assert len(groups.families) == 8
  # The residual stream is left: layer norm reduces over its channels.
  reasons = {(b.path, b.axis): b.reasons for b in groups.blocked}
  assert any('reduced over by reduce_sum' in r
             for r in reasons[(f"{block}['mlp_out']['kernel']", 1)])


def test_what_the_analysis_cannot_follow_is_reported_not_guessed():
  params = {'w1': jnp.ones((4, 6)), 'w2': jnp.ones((6, 3)),
            'w3': jnp.ones((6, 3))}

  def sorted_hidden(p, x):  # a sort over the channels: no rule
    return jnp.sort(x @ p['w1'], axis=-1) @ p['w2']

  groups = gsm_optax.find_groups(sorted_hidden, params, jnp.ones((2, 4)))
  assert not groups.families
  assert any('sort' in r for b in groups.blocked for r in b.reasons)

  def mixed(p, x):  # a reshape that mixes the batch with the channels
    return (x @ p['w1']).reshape(3, 4) @ p['w4']

  params['w4'] = jnp.ones((4, 3))
  groups = gsm_optax.find_groups(mixed, params, jnp.ones((2, 4)))
  assert not groups.families, groups.describe()
  assert any('channels mixed' in r for b in groups.blocked for r in b.reasons)

  def factored(p, x):  # (6) -> (2, 3) -> transposed (3, 2) -> (6): no mixing
    h = (x @ p['w1']).reshape(2, 2, 3).transpose(0, 2, 1).reshape(2, 6)
    return h @ p['w3']

  groups = gsm_optax.find_groups(factored, params, jnp.ones((2, 4)))
  # Two families, the factors: w1's column 3 * b + c is w3's row 2 * c + b.
  assert sorted(f.size for f in groups.families) == [2, 3]
  two = next(f for f in groups.families if f.size == 2)
  np.testing.assert_array_equal(member(two, "['w1']", 1).index,
                                [0, 0, 0, 1, 1, 1])
  np.testing.assert_array_equal(member(two, "['w3']", 0).index,
                                [0, 1, 0, 1, 0, 1])

  def unknown(p, x):  # a primitive with no rule: its axes are left
    h = x @ p['w1']
    return jax.lax.cumsum(h, axis=0) @ p['w2'] + jnp.fft.fft(h).real @ p['w3']

  groups = gsm_optax.find_groups(unknown, params, jnp.ones((2, 4)))
  assert 'fft' in groups.unsupported and not groups.families
  assert 'fft' in groups.describe()


def test_find_groups_errors_name_the_argument():
  params = {'w': jnp.ones((4, 3))}
  with pytest.raises(ValueError, match='could not trace.*nnx.merge'):
    gsm_optax.find_groups(lambda p, x: x @ p['w'], params, jnp.ones((2, 5)))
  mlp = lambda p, x: jax.nn.relu(x @ p['w']) @ p['v']
  params = {'w': jnp.ones((4, 3)), 'v': jnp.ones((3, 2))}
  with pytest.raises(ValueError, match='`min_keep`=4 must be between 1 and '
                     'the size of every layer'):
    gsm_optax.find_groups(mlp, params, jnp.ones((2, 4)), min_keep=4)
  groups = gsm_optax.find_groups(mlp, params, jnp.ones((2, 4)))
  with pytest.raises(ValueError, match=r"\['w'\] has shape \(5, 3\).*"
                     'find_groups again'):
    groups.bind({'w': jnp.ones((5, 3)), 'v': jnp.ones((3, 2))})
  with pytest.raises(ValueError, match='share no parameter'):
    groups.bind({'u': jnp.ones((5, 3))})


def test_groups_bind_below_a_leading_key_as_linen_variables_need():
  # Found on Linen-style variables; applied to variables['params'] (the
  # leading key off the groups' paths) and the other way round.
  def net(v, x):
    h = (x @ v['params']['w1'] - v['stats']['mean']) * v['params']['s']
    return jax.nn.relu(h) @ v['params']['w2']

  variables = {'params': {'w1': jnp.ones((4, 6)), 's': jnp.ones(6),
                          'w2': jnp.ones((6, 3))},
               'stats': {'mean': jnp.zeros(6)}}
  groups = gsm_optax.find_groups(net, variables, jnp.ones((2, 4)))
  assert [f.size for f in groups.families] == [6]
  leaves = jax.tree.leaves(variables['params'])  # s, w1, w2
  assert groups.bind(variables['params']) == [0, 1, 2, None]  # s, w1, w2, mean
  assert groups.bind(variables) == [0, 1, 2, 3]
  inner = gsm_optax.find_groups(
      lambda p, x: net({'params': p, 'stats': {'mean': 0.0}}, x),
      variables['params'], jnp.ones((2, 4)))
  assert inner.bind({'params': variables['params'], 'opt': {'w': 1.0}}) == [
      1, 2, 3]
  scores = jnp.arange(6.0)
  kept = groups.expand(scores >= 3, variables['params'])
  np.testing.assert_array_equal(kept[1][0], [False] * 3 + [True] * 3)
  assert len(leaves) == 3
  with pytest.raises(ValueError, match="variables\\['params'\\]"):
    groups.bind({'other': {'u': jnp.ones((5, 3))}})
