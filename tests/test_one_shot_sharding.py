"""One-shot pruning over 8 devices: the same masks and weights as one
device, and the collectives of its compiled pieces read from the HLO."""

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from benchmarks.speed import sharding as speed_sharding
import gsm_optax
from gsm_optax._src.oneshot import capture
from gsm_optax._src.oneshot import layer

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8,
    reason='needs XLA_FLAGS=--xla_force_host_platform_device_count=8')


def model():
  rng = np.random.default_rng(0)
  params = {'w1': jnp.asarray(rng.normal(size=(64, 128)), jnp.float32),
            'b1': jnp.zeros(128),
            'w2': jnp.asarray(rng.normal(size=(128, 32)), jnp.float32)}
  forward = lambda p, x: jax.nn.relu(x @ p['w1'] + p['b1']) @ p['w2']
  scale = np.exp(rng.normal(size=64))
  x = jnp.asarray(rng.normal(size=(32, 16, 64)) * scale, jnp.float32)
  return params, forward, x


def placed(params, x, mesh):
  """Kernels and biases split on their output axis, samples on the
  leading axis."""
  out = {k: jax.device_put(v, NamedSharding(mesh, P(*(
      [None] * (v.ndim - 1) + ['d'])))) for k, v in params.items()}
  return out, jax.device_put(x, NamedSharding(mesh, P('d')))


@pytest.mark.parametrize('pattern', [None, '2:4'])
@pytest.mark.parametrize('method', ['magnitude', 'wanda', 'sparsegpt'])
def test_sharded_one_shot_equals_one_device(method, pattern):
  params, forward, x = model()
  mesh = Mesh(np.array(jax.devices()[:8]), ('d',))
  ratio = None if pattern else 2.0
  single, single_masks = gsm_optax.one_shot_prune(
      forward, params, [x], ratio, method=method, pattern=pattern)
  sharded_params, sharded_x = placed(params, x, mesh)
  sharded, sharded_masks = gsm_optax.one_shot_prune(
      forward, sharded_params, [sharded_x], ratio, method=method,
      pattern=pattern)
  jax.tree.map(np.testing.assert_array_equal, sharded_masks, single_masks)
  for name in params:
    assert sharded[name].sharding.spec == sharded_params[name].sharding.spec
    if method == 'sparsegpt':  # the Hessian is summed in another order
      np.testing.assert_allclose(sharded[name], single[name], rtol=1e-5,
                                 atol=1e-5)
    else:
      np.testing.assert_array_equal(sharded[name], single[name])


def test_statistics_add_one_all_reduce_and_pruning_gathers_nothing():
  params, forward, x = model()
  mesh = Mesh(np.array(jax.devices()[:8]), ('d',))
  sharded_params, sharded_x = placed(params, x, mesh)
  leaves = jax.tree.leaves(sharded_params)
  traced = capture.Traced(forward, params, x)
  assert [s.leaf for s in traced.sites] == [1, 2]  # w1, w2 (b1 is 0)
  hlo = lambda fn, *args: speed_sharding.collectives(
      fn.lower(*args).compile().as_text())
  # The forward's own collectives: it gathers the split weights it needs
  # (FSDP). The statistics of both kernels add one all-reduce of the two
  # Hessians, summed over the devices' samples, and gather nothing more.
  stats = hlo(traced.statistics({0: 'hessian', 1: 'hessian'}), leaves,
              sharded_x)
  forward_only = hlo(jax.jit(traced.run), leaves, sharded_x)
  assert stats['all-reduce'] == (1, (64 * 64 + 128 * 128) * 4)
  assert stats['all-gather'][1] <= forward_only['all-gather'][1]
  assert set(stats) == {'all-reduce', 'all-gather'}
  # Pruning a kernel split on its rows: no gather, no all-to-all; the
  # unstructured SparseGPT block's threshold is found with all-reduces of
  # counts (3 radix passes here), N:M and Wanda need no collective.
  view = capture.kernel_view(sharded_params['w2'], (0,))
  assert view.sharding.spec[0] == 'd'
  h = jnp.eye(128)
  bigger = jax.device_put(jnp.tile(view, (8, 1)), view.sharding)
  for pattern, most in ((None, 3), (gsm_optax.NM(2, 4), 0)):
    kinds = hlo(layer.jit_sparsegpt, view, h, 0.5, pattern, 128, 0.01)
    assert set(kinds) <= {'all-reduce'}, kinds
    assert kinds.get('all-reduce', (0, 0))[0] <= most
    # Counts, not weights: the same bytes for a kernel 8 times as large.
    assert hlo(layer.jit_sparsegpt, bigger, h, 0.5, pattern, 128,
               0.01) == kinds
  assert hlo(layer.select, view, 2.0, 'wanda', None, None) == {}
