"""`find_groups` on attention as language models write it: a fused
query-key-value projection split in three, grouped-query heads."""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from examples.lm import model as model_lib
import gsm_optax


def members(family):
  return {(m.path, m.axis) for m in family.members}


def member(family, path, axis):
  return next(m for m in family.members if (m.path, m.axis) == (path, axis))


def test_fused_query_key_value_split_in_three_and_grouped_query_heads():
  # examples/lm's GPT: one qkv projection, split in three, then heads.
  model = model_lib.GPT(model_lib.GPTConfig(vocab=64, seq_len=16, width=32,
                                            heads=4, layers=1), nnx.Rngs(0))
  graphdef, state = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(state)
  forward = lambda p, x: nnx.merge(graphdef, p)(x)
  x = jnp.arange(32).reshape(2, 16) % 64
  groups = gsm_optax.find_groups(forward, params, x)
  block = "['blocks'][0]"
  assert [(f.name, f.size) for f in groups.families] == [
      (f"{block}['fc1']", 128), (f"{block}['qkv'] heads", 4),
      (f"{block}['qkv'] head dims [64:96]", 8),  # values, with out's rows
      (f"{block}['qkv'] head dims [0:64]", 8)]  # queries and keys
  heads, values, queries = groups.families[1:]
  qkv = f"{block}['qkv']['kernel']"
  np.testing.assert_array_equal(member(heads, qkv, 1).index,
                                np.tile(np.repeat(np.arange(4), 8), 3))
  np.testing.assert_array_equal(member(queries, qkv, 1).index,
                                np.r_[np.tile(np.arange(8), 8), [-1] * 32])
  assert members(values) == {(qkv, 1), (f"{block}['qkv']['bias']", 0),
                             (f"{block}['out']['kernel']", 0)}
  # Two heads and half the MLP gone: the slim model is the masked one.
  active = jnp.asarray([True] * 64 + [False] * 64 + [True, False] * 2
                       + [True] * 16)
  leaves, treedef = jax.tree.flatten(params)
  keep = groups.expand(active, params)
  masked = treedef.unflatten([x * keep[i] if i in keep else x
                              for i, x in enumerate(leaves)])
  slim_params, slim_fn, info = gsm_optax.slim(forward, masked, groups)
  np.testing.assert_allclose(slim_fn(slim_params, x), forward(masked, x),
                             rtol=1e-5, atol=1e-5)
  assert [c[1:] for c in info.channels] == [(128, 64), (4, 2), (8, 8), (8, 8)]

  def grouped_query(p, x):  # 4 query heads share 2 key heads
    q = jnp.einsum('bi,ihd->bhd', x, p['attention']['query']['kernel'])
    k = jnp.einsum('bi,ihd->bhd', x, p['attention']['key']['kernel'])
    return jnp.einsum('bhd,bhd->bh', q, jnp.repeat(k, 2, axis=1)) @ p['o']

  gqa = {'attention': {'query': {'kernel': jnp.ones((16, 4, 8))},
                       'key': {'kernel': jnp.ones((16, 2, 8))}},
         'o': jnp.ones((4, 3))}
  names = [f.name for f in gsm_optax.find_groups(
      grouped_query, gqa, jnp.ones((2, 16))).families]
  assert sorted(names) == ["['attention'] key-value heads",
                           "['attention'] query heads per key-value head",
                           "['attention']['key'] head dims"], names
