"""The CPU kernel of `sparse_apply`'s product (gsm_optax/_src/deploy/native.py)."""

import os
import shutil
import warnings

import jax
from jax.experimental import sparse as jsparse
import jax.numpy as jnp
import numpy as np
import pytest

from gsm_optax._src import native_build
from gsm_optax._src.deploy import native

needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get('CXX') or 'c++') is None,
    reason='no C++ compiler: the native kernel cannot be built here')

# (rows of the CSR matrix, its columns, batch, density): full 16-row tiles
# and a partial last tile, columns a multiple of 8 (the AVX transpose) and
# not, empty rows, an all-zero matrix, an empty batch.
SHAPES = [(300, 784, 256, 0.02), (7, 13, 5, 0.3), (5, 16, 33, 0.5),
          (40, 24, 17, 0.05), (3, 9, 16, 0.0), (4, 8, 0, 0.5)]


def case(m, k, b, density, seed=0):
  rng = np.random.default_rng(seed)
  w = (rng.normal(size=(m, k)) * (rng.random((m, k)) < density)).astype(
      np.float32)
  x = rng.normal(size=(b, k)).astype(np.float32)
  return w, x


@needs_compiler
@pytest.mark.parametrize('m,k,b,density', SHAPES)
def test_native_product_equals_numpy(m, k, b, density):
  w, x = case(m, k, b, density)
  matrix = jsparse.BCSR.fromdense(jnp.asarray(w))
  f = jax.jit(native.csr_times_transposed)
  assert native.TARGET in f.lower(matrix, x).as_text()
  out = np.asarray(f(matrix, x))
  assert out.shape == (m, b)
  np.testing.assert_allclose(out, w.astype(np.float64) @ x.T, rtol=1e-5,
                             atol=1e-5)


@needs_compiler
def test_switched_off_by_the_environment(monkeypatch):
  w, x = case(30, 20, 20, 0.2)
  matrix = jsparse.BCSR.fromdense(jnp.asarray(w))
  monkeypatch.setenv('GSM_OPTAX_NATIVE', '0')
  lowered = jax.jit(native.csr_times_transposed).lower(matrix, x)
  assert native.TARGET not in lowered.as_text()
  np.testing.assert_allclose(lowered.compile()(matrix, x), w @ x.T,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings('ignore:bcsr_dot_general cpu lowering')  # jax's own
def test_other_dtypes_take_jax_bcsr_product():
  w, x = case(6, 10, 4, 0.5)
  matrix = jsparse.BCSR.fromdense(jnp.asarray(w, jnp.bfloat16))
  lowered = jax.jit(native.csr_times_transposed).lower(
      matrix, jnp.asarray(x, jnp.bfloat16))
  assert native.TARGET not in lowered.as_text()


def test_a_failed_build_warns_falls_back_and_leaves_no_file(monkeypatch,
                                                            tmp_path):
  w, x = case(12, 20, 18, 0.3)
  matrix = jsparse.BCSR.fromdense(jnp.asarray(w))
  monkeypatch.setenv('GSM_OPTAX_CACHE_DIR', str(tmp_path))
  monkeypatch.setenv('CXX', 'false')  # a "compiler" that always fails
  native._library.cache_clear()
  try:
    with pytest.warns(RuntimeWarning, match='could not build the native'):
      lowered = jax.jit(native.csr_times_transposed).lower(matrix, x)
    assert native.TARGET not in lowered.as_text()
    np.testing.assert_allclose(lowered.compile()(matrix, x), w @ x.T,
                               rtol=1e-5, atol=1e-5)
    assert os.listdir(tmp_path) == []  # the temporary file is gone
  finally:
    native._library.cache_clear()  # later tests load the real kernel


@needs_compiler
def test_build_writes_the_library_under_its_key(tmp_path):
  path = native_build.library_path(native.SOURCE, str(tmp_path))
  assert os.path.dirname(path) == str(tmp_path)
  native_build.build(native.SOURCE, path)
  assert os.listdir(tmp_path) == [os.path.basename(path)]
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    # same key again
    assert native_build.library_path(native.SOURCE, str(tmp_path)) == path


@needs_compiler
def test_differentiable_and_vmappable_like_jax_product():
  w, x = case(20, 12, 18, 0.3)
  matrix = jsparse.BCSR.fromdense(jnp.asarray(w))
  loss = lambda data, x: jnp.sum(jnp.sin(native.csr_times_transposed(
      jsparse.BCSR((data, matrix.indices, matrix.indptr), shape=w.shape), x)))
  dense_loss = lambda w, x: jnp.sum(jnp.sin(w @ x.T))
  assert native.TARGET in jax.jit(jax.grad(loss)).lower(matrix.data,
                                                         x).as_text()
  d_data, d_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(matrix.data, x)
  d_w, d_x_ref = jax.grad(dense_loss, argnums=(0, 1))(jnp.asarray(w), x)
  np.testing.assert_allclose(d_x, d_x_ref, rtol=1e-5, atol=1e-5)
  rows, cols = np.nonzero(w)  # BCSR keeps the non-zeros in row order
  np.testing.assert_allclose(d_data, d_w[rows, cols], rtol=1e-5, atol=1e-5)
  _, tangent = jax.jvp(lambda x: loss(matrix.data, x), (x,), (x * 0.5,))
  _, tangent_ref = jax.jvp(lambda x: dense_loss(jnp.asarray(w), x), (x,),
                           (x * 0.5,))
  np.testing.assert_allclose(tangent, tangent_ref, rtol=1e-5, atol=1e-5)
  xs = np.stack([x, -2 * x])
  out = jax.jit(jax.vmap(lambda x: native.csr_times_transposed(matrix, x)))(xs)
  np.testing.assert_allclose(out, np.einsum('mk,nbk->nmb', w, xs), rtol=1e-5,
                             atol=1e-5)
