"""The CPU kernel of the radix route (gsm_optax/_src/selection/native_radix.py):
it is what runs, it counts many large arrays exactly, and without it the
route gives the same answer."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gsm_optax
from gsm_optax._src.selection import native_radix

needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get('CXX') or 'c++') is None,
    reason='no C++ compiler: the native kernel cannot be built here')


def threshold(scores, q):
  # A new jit each call: the route reads GSM_OPTAX_NATIVE when it traces.
  return jax.jit(lambda s, q: gsm_optax.global_threshold(s, q, 'radix'))(
      scores, q)


def expected(scores, q):
  """The Q-th largest key by a full sort, and how many keys reach it."""
  keys = np.concatenate([np.asarray(s).ravel().view(np.int32)
                         for s in scores])
  key = np.sort(keys)[::-1][q - 1]
  return key, int(np.sum(keys >= key))


def large_scores(seed):
  # Several chunks of 2**16 and a partial one, so the workers split them;
  # small leaves beside; ties and zeros among them.
  rng = np.random.default_rng(seed)
  shapes = [(700, 300), (3, 3, 64, 128), (5,), (1, 1)]
  out = []
  for shape in shapes:
    x = np.abs(rng.standard_normal(shape) * rng.standard_normal(shape))
    x[rng.random(shape) < 0.1] = 0.0
    x[rng.random(shape) < 0.05] = 0.25
    out.append(jnp.asarray(x, jnp.float32))
  return out


@needs_compiler
def test_the_route_runs_the_kernel_for_float32_on_the_cpu(monkeypatch):
  scores = [jnp.ones((4, 3)), jnp.ones(5)]
  text = jax.jit(lambda s: gsm_optax.global_threshold(s, 3, 'radix')).lower(
      scores).as_text()
  assert native_radix.TARGET in text
  monkeypatch.setenv('GSM_OPTAX_NATIVE', '0')
  text = jax.jit(lambda s: gsm_optax.global_threshold(s, 3, 'radix')).lower(
      scores).as_text()
  assert native_radix.TARGET not in text


@needs_compiler
@pytest.mark.parametrize('seed', [0, 1])
def test_kernel_counts_many_large_arrays_exactly(seed, monkeypatch):
  scores = large_scores(seed)
  n = sum(s.size for s in scores)
  for q in (1, 2, 1000, n // 60, n // 2, n - 1, n):
    key, count = threshold(scores, q)
    assert (int(key), int(count)) == expected(scores, q), q
  monkeypatch.setenv('GSM_OPTAX_NATIVE', '0')  # the jax.numpy route
  for q in (1, n // 60, n):
    key, count = threshold(scores, q)
    assert (int(key), int(count)) == expected(scores, q), q


def test_a_failed_build_warns_falls_back_and_leaves_no_file(monkeypatch,
                                                            tmp_path):
  scores = large_scores(2)
  monkeypatch.setenv('GSM_OPTAX_CACHE_DIR', str(tmp_path))
  monkeypatch.setenv('CXX', 'false')  # a "compiler" that always fails
  native_radix._library.cache_clear()
  try:
    with pytest.warns(RuntimeWarning, match='could not build the native CPU '
                      'radix kernel'):
      lowered = jax.jit(lambda s: gsm_optax.global_threshold(
          s, 500, 'radix')).lower(scores)
    assert native_radix.TARGET not in lowered.as_text()
    key, count = lowered.compile()(scores)
    assert (int(key), int(count)) == expected(scores, 500)
    assert os.listdir(tmp_path) == []  # the temporary file is gone
  finally:
    native_radix._library.cache_clear()  # later tests load the real kernel
