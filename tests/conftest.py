"""Eight virtual CPU devices for the sharding tests; must run before JAX
starts. The `fast_compile` fixture compiles with XLA's optimizations off."""
import os

import pytest

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')


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
