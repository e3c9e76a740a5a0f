"""A CPU kernel of our own for the sparse product of `sparse_apply`.

jax's BCSR product ``A @ B`` (the CPU kernel behind
``jax.experimental.sparse``) reads ``B`` in row-major order. For ``x @ W``,
`sparse_apply` computes ``W.T @ x.T``, so XLA first transposes the whole
batch ``x``; on a 2-core CPU that transpose cost as much as the product
(docs: deploy). ``csr_kernel.cc`` computes ``A @ x.T`` from ``x`` in its own
layout, transposing it a few rows at a time in cache.

The kernel is built and loaded by `native_build` (compiled on first use,
cached). Where that fails, or with ``GSM_OPTAX_NATIVE=0``, or off the CPU,
or for other dtypes than float32, the product is jax's own BCSR product:
the same result up to float rounding, slower. Derivatives (forward and
reverse) go through jax's product; under ``vmap`` the kernel runs once per
batch entry.
"""

import ctypes
import functools
import os
from typing import Optional

import jax
from jax.experimental import sparse as jsparse
import jax.numpy as jnp

from gsm_optax._src import native_build

TARGET = 'gsm_csr_times_transposed'
SOURCE = os.path.join(os.path.dirname(__file__), 'csr_kernel.cc')


@functools.cache
def _library() -> Optional[ctypes.CDLL]:
  """The loaded and registered kernel, or None (with one warning)."""
  return native_build.load(
      SOURCE, {TARGET: 'GsmCsrTimesTransposed'},
      'the native CPU sparse kernel',
      "sparse products use jax's BCSR kernel instead (same result, slower)")


def _native_applies(matrix: jsparse.BCSR, x) -> bool:
  return (native_build.enabled() and matrix.n_batch == 0 and
          matrix.n_dense == 0 and matrix.dtype == jnp.float32 and x.dtype == jnp.float32 and
          x.ndim == 2 and matrix.indices.dtype == jnp.int32 and
          matrix.indptr.dtype == jnp.int32 and _library() is not None)


def csr_times_transposed(matrix: jsparse.BCSR, x: jax.Array) -> jax.Array:
  """``matrix @ x.T`` for a 2-D BCSR ``matrix`` ``(m, k)`` and ``x`` ``(b, k)``.

  On the CPU, for float32, with the native kernel (see module docstring);
  elsewhere jax's BCSR product.
  """
  def portable(data, indices, indptr, x):
    return jsparse.BCSR((data, indices, indptr), shape=matrix.shape) @ x.T

  if not _native_applies(matrix, x):
    return portable(matrix.data, matrix.indices, matrix.indptr, x)

  def native(data, indices, indptr, x):
    call = jax.ffi.ffi_call(
        TARGET, jax.ShapeDtypeStruct((matrix.shape[0], x.shape[0]),
                                     jnp.float32), vmap_method='sequential')

    # Differentiable in the values and in x: the derivative, linear in
    # both, is jax's product (which also transposes, for reverse mode).
    @jax.custom_jvp
    def product(data, indices, indptr, x):
      return call(data, indices, indptr, x)

    @product.defjvp
    def _(primals, tangents):
      data, indices, indptr, x = primals
      d_data, _, _, d_x = tangents
      return product(*primals), (portable(d_data, indices, indptr, x) +
                                 portable(data, indices, indptr, d_x))

    return product(data, indices, indptr, x)

  return jax.lax.platform_dependent(matrix.data, matrix.indices,
                                    matrix.indptr, x, cpu=native,
                                    default=portable)
