"""Building, caching and loading gsm_optax's own CPU kernels (XLA FFI).

A kernel is one C++ source file beside the module that calls it. It is
compiled on first use with the C++ compiler of the machine (``$CXX``, else
``c++``) against the XLA FFI headers that jaxlib ships, and kept in
``$GSM_OPTAX_CACHE_DIR`` (default ``~/.cache/gsm_optax``) under a name that
hashes the source, the jaxlib version and the CPU. Where that fails, or with
``GSM_OPTAX_NATIVE=0``, the caller runs its portable route (after one
warning, for a failed build).
"""

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
from typing import Optional
import warnings

import jax
import jaxlib

FLAGS = ('-O3', '-march=native', '-std=c++17', '-shared', '-fPIC', '-w')


def enabled() -> bool:
  """Whether native kernels may be used (``GSM_OPTAX_NATIVE`` not 0)."""
  return os.environ.get('GSM_OPTAX_NATIVE', '1') != '0'


def _cpu_id() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      return next((l for l in f if l.startswith('flags')), '')
  except OSError:
    return platform.processor()


def library_path(source: str, cache_dir: Optional[str] = None) -> str:
  """Where the compiled ``source`` is kept for this jaxlib and CPU."""
  cache_dir = cache_dir or os.environ.get('GSM_OPTAX_CACHE_DIR') or os.path.join(
      os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'),
      'gsm_optax')
  with open(source, 'rb') as f:
    key = hashlib.sha256(f.read() + ' '.join(
        (jaxlib.__version__, platform.machine(), _cpu_id()) + FLAGS).encode())
  name = os.path.splitext(os.path.basename(source))[0]
  return os.path.join(cache_dir, f'{name}_{key.hexdigest()[:16]}.so')


def build(source: str, path: str, compiler: Optional[str] = None) -> None:
  """Compiles ``source`` into ``path`` (written to a temporary name in its
  folder, then renamed, so concurrent builds never see half a file)."""
  compiler = compiler or os.environ.get('CXX') or 'c++'
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix='.so', dir=os.path.dirname(path))
  os.close(fd)
  try:
    subprocess.run([compiler, *FLAGS, f'-I{jax.ffi.include_dir()}', source,
                    '-o', tmp], check=True, capture_output=True, text=True,
                   timeout=300)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def load(source: str, targets: dict[str, str],
         what: str, fallback: str) -> Optional[ctypes.CDLL]:
  """Builds ``source`` if needed, loads it and registers its handlers.

  Args:
    source: the C++ file.
    targets: FFI target name -> the handler's symbol in the library.
    what: the kernel, for the warning ("the native CPU sparse kernel").
    fallback: what runs instead, for the warning.

  Returns:
    The library, or None after one warning that says why and what to do.
  """
  path = library_path(source)
  try:
    if not os.path.exists(path):
      build(source, path)
    lib = ctypes.cdll.LoadLibrary(path)
    for target, symbol in targets.items():
      jax.ffi.register_ffi_target(
          target, jax.ffi.pycapsule(getattr(lib, symbol)), platform='cpu')
    return lib
  except (OSError, subprocess.SubprocessError, AttributeError) as e:
    stderr = getattr(e, 'stderr', '') or ''
    detail = next((l for l in stderr.splitlines() if 'error' in l),
                  stderr[-300:]) or e
    warnings.warn(
        f'gsm_optax: could not build {what} ({detail}); {fallback}. Install '
        'a C++ compiler (or set CXX), or set GSM_OPTAX_NATIVE=0 to skip the '
        'build.', RuntimeWarning, stacklevel=4)
    return None
