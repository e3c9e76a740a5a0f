"""GSM with parameters sharded over 8 (virtual CPU) devices."""

import re

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

import gsm_optax

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8,
    reason='needs XLA_FLAGS=--xla_force_host_platform_device_count=8')


def tree(seed):
  rng = np.random.default_rng(seed)
  # 'wide' is split along an inner axis, which a count that merged the
  # leading axes would gather; 'tall' and 'pointwise' (a 1x1 conv kernel)
  # along their last axis.
  shapes = {'conv': (3, 3, 16, 32), 'wide': (3, 3, 128, 64),
            'pointwise': (1, 1, 64, 256),
            'dense': (256, 64), 'tall': (64, 256), 'out': (64, 8),
            'bias': (64,)}
  return {k: jnp.asarray(rng.normal(size=s), jnp.float32)
          for k, s in shapes.items()}


def shard(x, mesh):
  # FSDP-style: split the largest axis divisible by the device count.
  axes = [i for i, d in enumerate(x.shape) if d % mesh.size == 0]
  if not axes:
    return jax.device_put(x, NamedSharding(mesh, P()))
  axis = max(axes, key=lambda i: x.shape[i])
  spec = [None] * x.ndim
  spec[axis] = 'd'
  return jax.device_put(x, NamedSharding(mesh, P(*spec)))


@pytest.mark.parametrize('method', ['interpolate', 'radix'])
@pytest.mark.parametrize('ratio', [5.0, 50.0])
def test_sharded_step_matches_single_device(ratio, method):
  params, grads = tree(0), tree(1)
  tx = gsm_optax.gsm(0.1, ratio, momentum=0.9, weight_decay=1e-3,
                     method=method)
  step = jax.jit(lambda g, s, p: tx.update(g, s, p))
  single_updates, single_state = step(grads, tx.init(params), params)

  mesh = Mesh(np.array(jax.devices()[:8]), ('d',))
  sp = jax.tree.map(lambda x: shard(x, mesh), params)
  sg = jax.tree.map(lambda x: shard(x, mesh), grads)
  state = jax.tree.map(lambda x: shard(x, mesh), tx.init(sp))
  sharded_updates, sharded_state = step(sg, state, sp)
  assert sharded_updates['dense'].sharding.is_equivalent_to(
      sp['dense'].sharding, 2)  # the update stays sharded
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               single_updates, sharded_updates)
  assert int(sharded_state[0].num_active) == int(single_state[0].num_active)
  assert float(sharded_state[0].threshold) == float(single_state[0].threshold)


def test_compiled_sharded_step_gathers_no_scores():
  params, grads = tree(0), tree(1)
  mesh = Mesh(np.array(jax.devices()[:8]), ('d',))
  sp = jax.tree.map(lambda x: shard(x, mesh), params)
  sg = jax.tree.map(lambda x: shard(x, mesh), grads)
  tx = gsm_optax.keep_top_taylor(10.0)
  hlo = jax.jit(tx.update).lower(sg, tx.init(sp), sp).compile().as_text()
  gathers = re.findall(r'all-gather[^\n]*', hlo)
  assert not gathers, gathers
  assert 'all-reduce' in hlo  # counts are summed across devices

