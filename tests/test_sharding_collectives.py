"""The collectives of every selection route under sharding, read from the
compiled HLO by the benchmark's reader (`benchmarks.speed.sharding`)."""

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest
from test_sharding import shard
from test_sharding import tree

from benchmarks.speed import sharding as speed_sharding
import gsm_optax
from gsm_optax._src.selection import native_radix
from gsm_optax._src.selection import search

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8,
    reason='needs XLA_FLAGS=--xla_force_host_platform_device_count=8')


def test_every_route_reduces_its_passes_and_gathers_nothing():
  # The collectives of keep_top_taylor's compiled update, read from the HLO
  # (benchmarks.speed.sharding.collective_rounds), FSDP over 8 devices.
  mesh = Mesh(np.array(jax.devices()[:8]), ('data',))
  routes = speed_sharding.route_rounds(tree(0), mesh)
  assert set(routes) == set(gsm_optax.SELECTION_METHODS)
  for route, (passes, rounds, kinds) in routes.items():
    if route == 'top_k':  # ranks the scores whole: it gathers them
      assert 'all-gather' in kinds
      continue
    assert set(kinds) == {'all-reduce'}, (route, kinds)
    if route == 'auto':  # the route it takes for float32 scores here
      route = search.auto_route([jnp.zeros(1)])
    if route == 'radix':
      # One histogram all-reduce per pass, no loop: 3 rounds every step
      # (2 where the native kernel counts a large tree, not this one).
      size = sum(x.size for x in jax.tree.leaves(tree(0)) if x.ndim >= 2)
      assert size < native_radix.SAMPLED_FROM
      assert passes == 3, passes
      assert rounds == speed_sharding.Rounds(passes, (), passes), rounds
    else:
      # A loop of counting passes: at most 2 all-reduces an iteration (this
      # tree's leaves are split two ways, which XLA reduces as two device
      # groups), so about 2 rounds a pass, several times radix's.
      assert rounds.per_iteration and max(rounds.per_iteration) <= 2, rounds
      bound = rounds.outside + max(rounds.per_iteration) * passes
      assert passes > 3 and bound > 3 * 3, (route, passes, rounds)


@pytest.mark.skipif(not native_radix.applies([jnp.zeros(1)]),
                    reason='the native radix kernel is not built here')
def test_native_radix_counts_shards_in_two_rounds_and_matches_one_device(
    monkeypatch):
  # The sampled route: the sample's all-reduce and the window's (2 rounds,
  # 1 pass over the scores) when the window holds the answer, as here; the
  # two radix passes after them where it does not (at most 4).
  monkeypatch.setattr(native_radix, 'SAMPLED_FROM', 2 ** 21)  # at trace
  rng = np.random.default_rng(0)
  big = {'wide': jnp.asarray(rng.normal(size=(2048, 1024)), jnp.float32),
         'small': jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)}
  assert sum(x.size for x in big.values()) >= native_radix.SAMPLED_FROM
  mesh = Mesh(np.array(jax.devices()[:8]), ('data',))
  passes, rounds, kinds = speed_sharding.route_rounds(big, mesh)['radix']
  assert (passes, rounds) == (1, speed_sharding.Rounds(4, (), 2))
  assert set(kinds) == {'all-reduce'}
  tx = gsm_optax.keep_top_taylor(10.0, method='radix')
  step = jax.jit(tx.update)
  single = step(big, tx.init(big), big)
  placed = jax.tree.map(
      lambda x: shard(x, Mesh(np.array(jax.devices()[:8]), ('d',))), big)
  sharded = step(placed, tx.init(placed), placed)
  assert int(sharded[1].num_active) == int(single[1].num_active)
  assert float(sharded[1].threshold) == float(single[1].threshold)
  jax.tree.map(np.testing.assert_array_equal, single[0], sharded[0])


@pytest.mark.skipif(not native_radix.applies([jnp.zeros(1)]),
                    reason='the native radix kernel is not built here')
def test_replicated_scores_take_the_one_call_select_and_no_collective():
  # Data parallel (every array whole on every device): the plain radix
  # route's op is lowered to one call of the kernel per device, with no
  # all-reduce; FSDP (split arrays): to its passes, one all-reduce each.
  params = tree(0)
  mesh = Mesh(np.array(jax.devices()[:8]), ('d',))
  tx = gsm_optax.keep_top_taylor(10.0, method='radix')
  step = jax.jit(tx.update)
  single = step(params, tx.init(params), params)
  placements = {
      'replicated': jax.tree.map(
          lambda x: jax.device_put(x, NamedSharding(mesh, P())), params),
      'split': jax.tree.map(lambda x: shard(x, mesh), params)}
  for name, placed in placements.items():
    state = tx.init(placed)
    text = step.lower(placed, state, placed).compile().as_text()
    one_call = native_radix.SELECT_TARGET in text
    reduces = text.count('all-reduce(') + text.count('all-reduce-start(')
    if name == 'replicated':
      assert one_call and reduces == 0, (name, reduces)
    else:
      assert not one_call and reduces >= 3, (name, reduces)
    updates, new_state = step(placed, state, placed)
    assert int(new_state.num_active) == int(single[1].num_active), name
    jax.tree.map(np.testing.assert_array_equal, single[0], updates)
