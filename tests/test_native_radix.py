"""The CPU kernel of the radix route (gsm_optax/_src/selection/native_radix.py):
it is what runs, it counts many large arrays exactly, and without it the
route gives the same answer."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_select import adversarial_scores

import gsm_optax
from gsm_optax._src.selection import native_radix
from gsm_optax._src.selection import search

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
  # Below SAMPLED_FROM, unsharded: the whole select in one call.
  assert native_radix.SELECT_TARGET in text
  monkeypatch.setenv('GSM_OPTAX_NATIVE', '0')
  text = jax.jit(lambda s: gsm_optax.global_threshold(s, 3, 'radix')).lower(
      scores).as_text()
  assert native_radix.TARGET not in text
  assert native_radix.SELECT_TARGET not in text


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


@needs_compiler
@pytest.mark.parametrize('spread', [2 ** 10, 2 ** 20])
def test_one_call_select_is_exact_with_a_bucket_past_its_lists(spread):
  # Nearly 2**21 keys with the same top 11 bits: the second pass lists more
  # than a worker keeps as a list (2**18; on up to 7 workers one of them
  # has more), so the digits are read off a histogram of the low 20 bits as
  # well. Low bits spread over `spread` values: ties, and every digit.
  rng = np.random.default_rng(3)
  n = 2 ** 21 - 1008
  assert n < native_radix.SAMPLED_FROM  # the one-call select
  base = np.float32(1.5).view(np.int32) & ~np.int32(2 ** 20 - 1)
  keys = base + rng.integers(0, spread, n).astype(np.int32) * (
      2 ** 20 // spread)
  scores = [jnp.asarray(keys[:n - 1000].view(np.float32).reshape(-1, 8)),
            jnp.asarray(keys[n - 1000:].view(np.float32))]
  for q in (1, 2, n // 3, n - 1, n):
    key, count = threshold(scores, q)
    assert (int(key), int(count)) == expected(scores, q), q


# The sampled route (a sample, then one pass over a window) on trees from
# SAMPLED_SHAPES on: the form is chosen when the route is traced.
SAMPLED_SHAPES = ((2048, 1024), (3, 3, 64, 128), (7,), (300,))


@pytest.fixture
def sampled(monkeypatch):
  monkeypatch.setattr(native_radix, 'SAMPLED_FROM', 2 ** 21)


@needs_compiler
@pytest.mark.parametrize('kind', ['random', 'ties', 'zeros', 'huge_tiny',
                                  'denormal_only', 'nonfinite', 'all_equal',
                                  'one_bucket'])
def test_the_sampled_route_is_exact_in_one_pass(kind, sampled):
  scores = adversarial_scores(kind, np.random.default_rng(0), SAMPLED_SHAPES)
  n = sum(s.size for s in scores)
  assert n >= native_radix.SAMPLED_FROM
  select = jax.jit(lambda s, q: search.select_top_q(s, q, 'radix'))
  for q in (1, 2, n // 300, n // 10, n // 2, n - 1, n):
    top = select(scores, q)
    assert (int(top.threshold_key), int(top.num_active)) == expected(
        scores, q), q
    assert int(top.mask_key) == int(top.threshold_key)
    # The window holds the answer (1 pass), or two radix passes follow: at
    # the ends, and where the answer lies between a mass of equal scores
    # and a thin tail that the sample cannot place within a few buckets.
    assert int(top.passes) in (1, 3), q
    if kind in ('random', 'all_equal', 'one_bucket') and (
        n // 300 <= q <= n // 2):
      assert int(top.passes) == 1, q


@needs_compiler
def test_a_window_that_misses_the_answer_falls_back_to_two_passes(sampled):
  # One score far above the rest, which the sample (1 block in 8 here)
  # does not see: the window, where the sample puts the largest, lies below
  # it, and two radix passes find it.
  scores = adversarial_scores('random', np.random.default_rng(1),
                              SAMPLED_SHAPES)
  scores[0] = scores[0].at[5, 5].set(1e30)
  select = jax.jit(lambda s, q: search.select_top_q(s, q, 'radix'))
  top = select(scores, 1)
  assert int(top.passes) == 3
  assert (int(top.threshold_key), int(top.num_active)) == expected(scores, 1)
  assert float(gsm_optax.key_to_score(top.threshold_key, jnp.float32)) == float(
      np.float32(1e30))


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
    assert native_radix.SELECT_TARGET not in lowered.as_text()
    key, count = lowered.compile()(scores)
    assert (int(key), int(count)) == expected(scores, 500)
    assert os.listdir(tmp_path) == []  # the temporary file is gone
  finally:
    native_radix._library.cache_clear()  # later tests load the real kernel
