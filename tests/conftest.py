"""Eight virtual CPU devices for the sharding tests; must run before JAX
starts. A persistent compilation cache for the run, new and empty each
time (so a test never reads what an earlier run compiled), one per pytest
process and shared with the processes its tests start: the many runs of
the same small models compile each program once. The `fast_compile` fixture compiles with XLA's
optimizations off."""
import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
# Each pytest process (the xdist workers each) has its own cache, which the
# processes its tests start inherit: no process reads an entry that another
# is still writing (jax would warn, and the tests that make warnings errors
# would fail). A cache the user set is left alone.
if ('JAX_COMPILATION_CACHE_DIR' not in os.environ or
    os.environ.get('GSM_OPTAX_TESTS_CACHE_PID', str(os.getpid())) !=
    str(os.getpid())):
  _cache = tempfile.mkdtemp(prefix='gsm_optax_tests_jax_cache_')
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
  os.environ['GSM_OPTAX_TESTS_CACHE_PID'] = str(os.getpid())
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'


@pytest.fixture
def fast_compile():
  """XLA's optimizations off for one test, then as they were: the tests of
  whole models run a few steps, so compiling is most of their time (halved
  for DenseNet-40's config test, 156 s to 95 s). Only for tests that
  compare with a tolerance or check counts, never bit-exactness."""
  import jax  # pylint: disable=import-outside-toplevel
  before = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', before)
