"""A CPU kernel of our own for the sparse product of `sparse_apply`.

jax's BCSR product ``A @ B`` (the CPU kernel behind
``jax.experimental.sparse``) reads ``B`` in row-major order. For ``x @ W``,
`sparse_apply` computes ``W.T @ x.T``, so XLA first transposes the whole
batch ``x``; on a 2-core CPU that transpose cost as much as the product
(docs: deploy). ``csr_kernel.cc`` computes ``A @ x.T`` from ``x`` in its own
layout, transposing it a few rows at a time in cache.

The kernel is compiled on first use with the C++ compiler of the machine
(``$CXX``, else ``c++``) against the XLA FFI headers that jaxlib ships, and
kept in ``$GSM_OPTAX_CACHE_DIR`` (default ``~/.cache/gsm_optax``) under a
name that hashes the source, the jaxlib version and the CPU. Where that
fails, or with ``GSM_OPTAX_NATIVE=0``, or off the CPU, or for other dtypes
than float32, the product is jax's own BCSR product: the same result up to
float rounding, slower. Derivatives (forward and reverse) go through jax's
product; under ``vmap`` the kernel runs once per batch entry.
"""

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import tempfile
from typing import Optional
import warnings

import jax
from jax.experimental import sparse as jsparse
import jax.numpy as jnp
import jaxlib

TARGET = 'gsm_csr_times_transposed'
_SOURCE = os.path.join(os.path.dirname(__file__), 'csr_kernel.cc')
_FLAGS = ('-O3', '-march=native', '-std=c++17', '-shared', '-fPIC', '-w')


def enabled() -> bool:
  """Whether the native kernel may be used (``GSM_OPTAX_NATIVE`` not 0)."""
  return os.environ.get('GSM_OPTAX_NATIVE', '1') != '0'


def _cpu_id() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      return next((l for l in f if l.startswith('flags')), '')
  except OSError:
    return platform.processor()


def library_path(cache_dir: Optional[str] = None) -> str:
  """Where the compiled kernel is kept for this source, jaxlib and CPU."""
  cache_dir = cache_dir or os.environ.get('GSM_OPTAX_CACHE_DIR') or os.path.join(
      os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'),
      'gsm_optax')
  with open(_SOURCE, 'rb') as f:
    key = hashlib.sha256(f.read() + ' '.join(
        (jaxlib.__version__, platform.machine(), _cpu_id()) + _FLAGS).encode())
  return os.path.join(cache_dir, f'csr_kernel_{key.hexdigest()[:16]}.so')


def build(path: str, compiler: Optional[str] = None) -> None:
  """Compiles the kernel into ``path`` (written to a temporary name in its
  folder, then renamed, so concurrent builds never see half a file)."""
  compiler = compiler or os.environ.get('CXX') or 'c++'
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix='.so', dir=os.path.dirname(path))
  os.close(fd)
  try:
    subprocess.run([compiler, *_FLAGS, f'-I{jax.ffi.include_dir()}', _SOURCE,
                    '-o', tmp], check=True, capture_output=True, text=True,
                   timeout=300)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


@functools.cache
def _library() -> Optional[ctypes.CDLL]:
  """The loaded and registered kernel, or None (with one warning)."""
  path = library_path()
  try:
    if not os.path.exists(path):
      build(path)
    lib = ctypes.cdll.LoadLibrary(path)
    jax.ffi.register_ffi_target(
        TARGET, jax.ffi.pycapsule(lib.GsmCsrTimesTransposed), platform='cpu')
    return lib
  except (OSError, subprocess.SubprocessError, AttributeError) as e:
    stderr = getattr(e, 'stderr', '') or ''
    detail = next((l for l in stderr.splitlines() if 'error' in l),
                  stderr[-300:]) or e
    warnings.warn(
        f'gsm_optax: could not build the native CPU sparse kernel ({detail}); '
        'sparse products use jax\'s BCSR kernel instead (same result, '
        'slower). Install a C++ compiler (or set CXX), or set '
        'GSM_OPTAX_NATIVE=0 to skip the build.', RuntimeWarning, stacklevel=3)
    return None


def _native_applies(matrix: jsparse.BCSR, x) -> bool:
  return (enabled() and matrix.n_batch == 0 and matrix.n_dense == 0 and
          matrix.dtype == jnp.float32 and x.dtype == jnp.float32 and
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
