"""The slim model: outputs equal the masked model's on every example model,
it is physically smaller, it exports and runs without the model's code."""

import os
import subprocess
import sys

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import model_zoo
import numpy as np
import pytest

import gsm_optax

# Small inputs, the same architectures.
MODELS = {'lenet300': (3, 28, 28, 1), 'lenet5': (3, 28, 28, 1),
          'resnet56': (2, 16, 16, 3), 'resnet50': (1, 32, 32, 3),
          'densenet_small': (1, 16, 16, 3), 'transformer': (2, 16)}


def setup(name, seed=0):
  shape = MODELS[name]
  graphdef, params = model_zoo.model(name)
  fn = lambda p, x: nnx.merge(graphdef, p)(x)
  key = jax.random.key(seed)
  x = (jax.random.randint(key, shape, 0, 16) if name == 'transformer' else
       jax.random.normal(key, shape))
  return fn, params, x, graphdef


def masked_at_random(groups, params, seed):
  """Half of the groups off (one per family always on), zeroed."""
  active = np.random.default_rng(seed).random(groups.num_groups) < 0.5
  active[groups.offsets[:-1]] = True
  masks = groups.expand(jnp.asarray(active), params)
  leaves, treedef = jax.tree.flatten(params)
  return active, jax.tree.unflatten(treedef, [
      jnp.where(masks[i], x, 0) if i in masks else x
      for i, x in enumerate(leaves)])


@pytest.mark.parametrize('name', list(MODELS))
def test_slim_outputs_equal_the_masked_models(name, fast_compile):
  fn, params, x, _ = setup(name)
  groups = gsm_optax.find_groups(fn, params, x)
  active, masked = masked_at_random(groups, params, 1)
  small, slim_fn, info = gsm_optax.slim(fn, masked, groups)
  full = jax.jit(fn)(masked, x)
  out = jax.jit(slim_fn)(small, x)
  scale = float(jnp.max(jnp.abs(full)))
  np.testing.assert_allclose(out, full, atol=1e-5 * max(scale, 1.0))
  # Physically smaller, by exactly what the groups' costs said.
  assert sum(np.size(a) for a in jax.tree.leaves(small)) == info.params[1]
  assert info.params[1] < 0.8 * info.params[0]
  counts = [n for _, _, n in info.channels]
  assert counts == [int(active[groups.offsets[i]:groups.offsets[i + 1]].sum())
                    for i in range(len(groups.families))]
  report = gsm_optax.structure_report(masked, groups)
  assert report.total_params == info.params
  assert report.total_flops == pytest.approx(info.flops)


def test_lenet300_shapes_and_another_batch():
  fn, params, x, graphdef = setup('lenet300')
  groups = gsm_optax.find_groups(fn, params, x)
  active, masked = masked_at_random(groups, params, 2)
  small, slim_fn, _ = gsm_optax.slim(fn, masked, groups)
  n1, n2 = int(active[:300].sum()), int(active[300:].sum())
  assert small['fc1']['kernel'].shape == (784, n1)
  assert small['fc2']['kernel'].shape == (n1, n2)
  assert small['fc3']['kernel'].shape == (n2, 10)
  bigger = jax.random.normal(jax.random.key(3), (17, 28, 28, 1))
  np.testing.assert_allclose(slim_fn(small, bigger), fn(masked, bigger),
                             atol=1e-5)
  # Flax NNX: a module of the smaller widths, where every layer reads its
  # width from its arrays (Linear, Conv, norms).
  module = nnx.merge(graphdef, small)
  np.testing.assert_allclose(module(bigger), fn(masked, bigger), atol=1e-5)


def test_attention_keeps_its_widths_as_attributes_so_use_slim_fn():
  fn, params, x, graphdef = setup('transformer')
  groups = gsm_optax.find_groups(fn, params, x)
  _, masked = masked_at_random(groups, params, 4)
  small, slim_fn, _ = gsm_optax.slim(fn, masked, groups)
  with pytest.raises(TypeError):  # num_heads, head_dim are static there
    nnx.merge(graphdef, small)(x)
  np.testing.assert_allclose(slim_fn(small, x), fn(masked, x), atol=1e-4)


def test_export_runs_in_a_fresh_process_without_the_models_code(tmp_path):
  fn, params, x, _ = setup('lenet5')
  groups = gsm_optax.find_groups(fn, params, x)
  _, masked = masked_at_random(groups, params, 5)
  small, slim_fn, _ = gsm_optax.slim(fn, masked, groups)
  blob = gsm_optax.export_slim(slim_fn, small, x)
  (tmp_path / 'slim.bin').write_bytes(blob)
  batch = np.asarray(jax.random.normal(jax.random.key(6), (5, 28, 28, 1)))
  np.save(tmp_path / 'x.npy', batch)
  script = (
      'import sys, jax, numpy as np\n'
      "exported = jax.export.deserialize(open('slim.bin', 'rb').read())\n"
      "out = exported.call(np.load('x.npy'))\n"
      "np.save('out.npy', np.asarray(out))\n"
      "loaded = [m for m in sys.modules if m.split('.')[0] in "
      "('examples', 'flax', 'gsm_optax')]\n"
      'assert not loaded, loaded\n')
  env = dict(os.environ, PYTHONPATH='')
  subprocess.run([sys.executable, '-c', script], cwd=tmp_path, check=True,
                 env=env)
  np.testing.assert_allclose(np.load(tmp_path / 'out.npy'),
                             fn(masked, batch), atol=1e-5)


def test_slim_refuses_passive_groups_that_are_not_zero():
  fn, params, x, _ = setup('lenet300')
  groups = gsm_optax.find_groups(fn, params, x)
  active, masked = masked_at_random(groups, params, 7)
  off = int(np.flatnonzero(~active[:300])[0])
  leaky = jax.tree.map(lambda a: a, masked)
  leaky['fc1']['bias'] = masked['fc1']['bias'].at[off].set(0.25)
  masks = groups.expand(jnp.asarray(active), masked)
  leaves, treedef = jax.tree.flatten(masked)
  mask_tree = jax.tree.unflatten(treedef, [
      masks.get(i, jnp.ones(np.shape(l), bool)) for i, l in enumerate(leaves)])
  with pytest.raises(ValueError, match=r"not zero: \|w\| up to 0.25 in "
                     r"\['fc1'\]\['bias'\].*gsm_optax.prune"):
    gsm_optax.slim(fn, leaky, groups, masks=mask_tree)
  gsm_optax.slim(fn, leaky, groups, masks=mask_tree, tolerance=0.3)
  with pytest.raises(ValueError, match='every leaf the groups were found on'):
    gsm_optax.slim(fn, {'fc1': masked['fc1']}, groups)


def test_slim_measures_its_speedup_when_asked_and_warns_when_slower(
    monkeypatch):
  params = {'w1': jnp.ones((64, 32)).at[:, 16:].set(0.0), 'b1': jnp.zeros(32),
            'w2': jnp.ones((32, 8)).at[16:].set(0.0)}
  mlp = lambda p, x: jax.nn.relu(x @ p['w1'] + p['b1']) @ p['w2']
  x = jnp.ones((16, 64))
  groups = gsm_optax.find_groups(mlp, params, x)
  _, _, info = gsm_optax.slim(mlp, params, groups)
  assert info.speedup is None  # not asked
  _, _, info = gsm_optax.slim(mlp, params, groups, measure=(x,), repeats=3)
  assert isinstance(info.speedup, float) and info.speedup > 0
  # Slower than dense: a warning that says by how much and what to do.
  from gsm_optax._src.deploy import slim as slim_lib  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(slim_lib, '_speedup', lambda *a: 0.5)
  with pytest.warns(gsm_optax.SlimSlowerWarning,
                    match=r'2\.00x slower.*2\.00x fewer FLOPs.*round_to'):
    _, _, info = gsm_optax.slim(mlp, params, groups, measure=(x,))
  assert info.speedup == 0.5
