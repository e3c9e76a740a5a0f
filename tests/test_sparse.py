"""Sparse inference: `to_sparse` and `sparse_apply` against the dense model."""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import model_zoo
import numpy as np
import pytest
from test_native import needs_compiler
from test_sparse_io import sparse_array

from examples.paper import models
import gsm_optax

# (model, input, ratios, jitted, sparse_forward): every model's products
# jitted (with XLA's optimizations off, 2.5-4x faster than op by op for the
# conv nets' small forms), LeNet-5's also op by op (`sparse_apply` called
# eagerly); `sparse_forward` on the LeNets, whose kernels are mostly
# matrices, at three ratios; the conv nets at one.
MODELS = [('lenet300', (3, 28, 28, 1), (10.0, 60.0, 300.0), True, True),
          ('lenet5', (3, 28, 28, 1), (10.0, 125.0, 300.0), True, True),
          ('lenet5', (3, 28, 28, 1), (60.0,), False, False),
          ('resnet56', (2, 32, 32, 3), (10.0,), True, False),
          ('densenet40', (2, 32, 32, 3), (10.0,), True, False),
          ('resnet50', (1, 32, 32, 3), (5.0,), True, False)]


@pytest.mark.parametrize('name,shape,ratios,jitted,with_sparse_forward',
                         MODELS)
def test_sparse_forward_equals_dense_forward(name, shape, ratios, jitted,
                                            with_sparse_forward, fast_compile):
  for ratio in ratios:
    check_sparse_forward(name, shape, ratio, jitted, with_sparse_forward)


def check_sparse_forward(name, shape, ratio, jitted, with_sparse_forward):
  # Random weights (a prune's pattern is drawn below anyway); the conv nets'
  # initializers would compile for minutes. Their smaller forms hold every
  # kind of layer the products run through (tests/model_zoo.py).
  model = model_zoo.small_create_model(name, 1000 if name == 'resnet50' else
                                       10, 0)
  model.eval()
  graphdef, state = nnx.split(model)
  full = nnx.to_pure_dict(state)
  # Keep 1 / ratio of every kernel's weights (a prune's pattern, drawn at
  # random: the test is about the product, not the ranking); batch-norm
  # statistics and biases stay as they are.
  rng = np.random.default_rng(int(ratio))
  merged = jax.tree.map(
      lambda w: np.where(rng.random(np.shape(w)) < 1 / ratio, w, 0).astype(
          w.dtype) if np.ndim(w) >= 2 else np.asarray(w), full)
  forward = lambda p, x: nnx.merge(graphdef, p)(x)
  prunable = lambda p: jax.tree.map(lambda x: np.ndim(x) >= 2, p)
  sparse_params = gsm_optax.to_sparse(merged, prunable=prunable)
  assert any(isinstance(x, gsm_optax.SparseKernel) for x in jax.tree.leaves(
      sparse_params, is_leaf=lambda x: isinstance(x, gsm_optax.SparseKernel)))
  x = jnp.asarray(np.random.default_rng(6).normal(size=shape), jnp.float32)
  maybe_jit = jax.jit if jitted else (lambda f: f)
  dense_out = maybe_jit(forward)(merged, x)
  out = maybe_jit(gsm_optax.sparse_apply(forward))(sparse_params, x)
  np.testing.assert_allclose(out, dense_out, rtol=1e-4, atol=1e-5)
  if with_sparse_forward:  # sparse from its threshold on, dense below
    predict = gsm_optax.sparse_forward(forward, merged, prunable=prunable,
                                       dense_below=2)
    for rows in (1, 2):
      np.testing.assert_allclose(predict(x[:rows]), dense_out[:rows],
                                 rtol=1e-4, atol=1e-5)


def test_linear_layers_never_see_a_dense_kernel():
  rng = np.random.default_rng(7)
  model = models.create_model('lenet300', 10, 0)
  graphdef, state = nnx.split(model)
  params = gsm_optax.prune(nnx.to_pure_dict(state), 60.0)[0]
  sparse_params = gsm_optax.to_sparse(params)
  forward = lambda p, x: nnx.merge(graphdef, p)(x)
  x = jnp.asarray(rng.normal(size=(256, 784)), jnp.float32)
  jaxpr = jax.make_jaxpr(gsm_optax.sparse_apply(forward))(sparse_params, x)
  shapes = {tuple(v.aval.shape) for eqn in jaxpr.jaxpr.eqns
            for v in eqn.outvars}
  assert not shapes & {(784, 300), (300, 784), (300, 100), (100, 300)}
  # Densifying first would show: the check can fail.
  densified = jax.make_jaxpr(lambda p, x: forward(gsm_optax.to_dense(p), x))(
      sparse_params, x)
  assert (784, 300) in {tuple(v.aval.shape) for eqn in densified.jaxpr.eqns
                        for v in eqn.outvars}


def test_sparse_kernel_is_a_pytree_and_to_sparse_checks_max_density():
  kernel = gsm_optax.SparseKernel.fromdense(np.eye(4, dtype=np.float32))
  leaves, treedef = jax.tree.flatten(kernel)
  again = jax.tree.unflatten(treedef, leaves)
  np.testing.assert_array_equal(again.todense(), np.eye(4))
  assert again.shape == (4, 4) and again.nnz == 4
  with pytest.raises(ValueError, match='`max_density`'):
    gsm_optax.to_sparse({'w': np.eye(4)}, max_density=2.0)


def test_sparse_apply_through_elementwise_ops_reductions_and_dense_kernels():
  # Products stay transposed through elementwise ops (with scalar, row and
  # column operands), are transposed back for anything else (reductions,
  # comparisons), and a dense kernel after a sparse one multiplies the
  # transposed value; 3-D inputs take the plain route. All must equal the
  # dense function.
  rng = np.random.default_rng(11)
  params = {'w1': sparse_array(rng, (20, 30), 0.1),
            'b1': rng.normal(size=30).astype(np.float32),
            'w2': sparse_array(rng, (30, 8), 0.2),
            'w3': rng.normal(size=(8, 5)).astype(np.float32),
            'b3': rng.normal(size=5).astype(np.float32)}

  def f(p, x, x3):
    h = jax.nn.gelu(x @ p['w1'] + p['b1'])
    h = jnp.where(h > 0.1, h, 0.5 * h) * x.sum(axis=1, keepdims=True)
    h = jnp.clip(h @ p['w2'], -3.0, 3.0)
    h = jnp.tanh(h) - h.mean(axis=0) + 2.0 ** h
    out = jax.nn.softmax(jax.nn.relu(h) @ p['w3'] + p['b3'])
    return out, (x3 @ p['w1']).astype(jnp.float16)

  sparse_params = gsm_optax.to_sparse(params)
  assert {k for k, v in sparse_params.items()
          if isinstance(v, gsm_optax.SparseKernel)} == {'w1', 'w2'}
  x = jnp.asarray(rng.normal(size=(6, 20)), jnp.float32)
  x3 = jnp.asarray(rng.normal(size=(2, 4, 20)), jnp.float32)
  want = f(params, x, x3)
  for g in (gsm_optax.sparse_apply(f), jax.jit(gsm_optax.sparse_apply(f))):
    got = g(sparse_params, x, x3)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), got) == jax.tree.map(
        lambda a: (a.shape, a.dtype), want)
    for a, b in zip(got, want):
      np.testing.assert_allclose(np.asarray(a, np.float32),
                                 np.asarray(b, np.float32), rtol=2e-3,
                                 atol=1e-5)


@pytest.mark.parametrize('use_native,transposes', [
    ('0', 2), pytest.param('1', 1, marks=needs_compiler)])
def test_lenet300_activations_are_transposed_once_each_way(
    monkeypatch, use_native, transposes):
  # The BCSR product gives W.T @ x.T; the evaluation keeps that layout
  # between the layers, so the batch is transposed once in and once out
  # (transposing around every product would show 4 or more). The native
  # CPU kernel reads the batch as it is: only the output is transposed (the
  # input transpose is left in the other platforms' branch).
  monkeypatch.setenv('GSM_OPTAX_NATIVE', use_native)
  model = models.create_model('lenet300', 10, 0)
  graphdef, state = nnx.split(model)
  rng = np.random.default_rng(12)
  params = jax.tree.map(
      lambda w: np.where(rng.random(np.shape(w)) < 0.02, w, 0).astype(w.dtype)
      if np.ndim(w) == 2 else np.asarray(w), nnx.to_pure_dict(state))
  forward = lambda p, x: nnx.merge(graphdef, p)(x)
  x = jnp.zeros((256, 28, 28, 1), jnp.float32)
  jaxpr = jax.make_jaxpr(gsm_optax.sparse_apply(forward))(
      gsm_optax.to_sparse(params), x)
  batch_transposes = [eqn for eqn in jaxpr.jaxpr.eqns
                      if eqn.primitive.name == 'transpose'
                      and 256 in eqn.outvars[0].aval.shape]
  assert len(batch_transposes) == transposes
