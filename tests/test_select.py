"""Every selection route gives the identical threshold and mask on hard
inputs: ties, zeros, denormals, NaN and inf, all scores equal, all in one
radix bucket, Q = 1 and Q = N."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gsm_optax


def numpy_kth_key(scores, q):
  """Reference: Q-th largest bit pattern (NaN above inf), by a full sort."""
  keys = np.concatenate([np.asarray(s, np.float32).ravel().view(np.int32)
                         for s in scores])
  return np.sort(keys)[::-1][q - 1]


def adversarial_scores(kind, rng, shapes=((7, 5), (3, 3, 4, 2), (130,))):
  def draw(shape):
    if kind == 'random':
      return rng.exponential(size=shape)
    if kind == 'ties':
      return rng.integers(0, 3, size=shape).astype(float)
    if kind == 'zeros':
      return np.where(rng.random(shape) < 0.9, 0.0, rng.random(shape))
    if kind == 'huge_tiny':
      choices = np.array([0.0, 1e-45, 3e-45, 1e-40, 1.17e-38, 1.2e-38, 4.7e-38,
                          1e-30, 1.0, 1e30, 3.4e38, np.inf])
      return rng.choice(choices, size=shape)
    if kind == 'denormal_only':
      return rng.integers(0, 50, size=shape) * 1e-45
    if kind == 'all_equal':
      return np.full(shape, 0.7)
    if kind == 'one_bucket':  # the top 11 key bits (and more) all alike
      return 1.0 + rng.integers(0, 40, size=shape) * 2.0**-23
    if kind == 'nonfinite':
      return rng.choice(np.array([np.nan, np.inf, 0.5, 2.0, 0.0]), size=shape)
    raise ValueError(kind)
  return [jnp.asarray(np.abs(draw(s)), jnp.float32) for s in shapes]


@pytest.mark.parametrize('kind', ['random', 'ties', 'zeros', 'huge_tiny',
                                  'denormal_only', 'nonfinite', 'all_equal',
                                  'one_bucket'])
@pytest.mark.parametrize('q', [1, 2, 17, 100, 236, 237])
def test_routes_identical_and_exact(kind, q):
  scores = adversarial_scores(kind, np.random.default_rng(q))
  expected = numpy_kth_key(scores, q)
  all_keys = np.concatenate([np.asarray(s).ravel().view(np.int32)
                             for s in scores])
  for method in gsm_optax.SELECTION_METHODS:
    key, n = jax.jit(gsm_optax.global_threshold, static_argnums=(1, 2))(
        scores, q, method)
    assert int(key) == expected, method
    assert int(n) == np.sum(all_keys >= expected) >= q, method


@pytest.mark.parametrize('method', ['interpolate', 'bisect', 'radix'])
def test_searches_accept_traced_q(method):
  scores = adversarial_scores('random', np.random.default_rng(0))
  f = jax.jit(lambda s, q: gsm_optax.global_threshold(s, q, method))
  for q in (5, 50, 200):
    key, _ = f(scores, jnp.int32(q))
    assert int(key) == numpy_kth_key(scores, q)
  assert f._cache_size() == 1  # pylint: disable=protected-access


@pytest.mark.parametrize('dtypes', [('float32', 'float32'),
                                    ('bfloat16', 'bfloat16'),
                                    ('float16', 'bfloat16'),
                                    ('float32', 'bfloat16')])
@pytest.mark.parametrize('ratio', [2.0, 9.0, 40.0])
def test_masks_identical_for_low_precision_and_mixed_dtypes(dtypes, ratio):
  rng = np.random.default_rng(int(ratio))
  params = {'a': jnp.asarray(rng.normal(size=(16, 8)), dtypes[0]),
            'b': jnp.asarray(rng.normal(size=(3, 3, 4, 4)), dtypes[1]),
            'bias': jnp.asarray(rng.normal(size=(8,)), dtypes[0])}
  # Rounded gradients make many exact ties in low precision.
  grads = jax.tree.map(lambda p: jnp.round(jnp.asarray(
      rng.normal(size=p.shape) * 4)).astype(p.dtype) / 4, params)
  out = {}
  for method in gsm_optax.SELECTION_METHODS:
    tx = gsm_optax.keep_top_taylor(ratio, method=method)
    out[method] = jax.jit(tx.update)(grads, tx.init(params), params)
  for method in ('interpolate', 'bisect'):
    jax.tree.map(np.testing.assert_array_equal, out[method], out['top_k'])
  updates, state = out['interpolate']
  # The masked gradient keeps each leaf's dtype.
  assert jax.tree.map(lambda u: u.dtype, updates) == jax.tree.map(
      lambda p: p.dtype, params)
  scores = [np.abs(np.asarray(grads[k], np.float32) *
                   np.asarray(params[k], np.float32)) for k in ('a', 'b')]
  q = int(np.floor((16 * 8 + 3 * 3 * 4 * 4) / ratio))
  key = numpy_kth_key(scores, q)
  assert float(state.threshold) == np.array(key, np.int32).view(np.float32)


@pytest.mark.parametrize('shape', [(2**24 // 7 + 1, 7),
                                   (2**24 // 128 + 1, 128)])
def test_large_leaf_counts_exactly(shape):
  # Partial float counts must stay exact past 2**24 elements in one leaf
  # (rows of 7 are reduced, rows of 128 are counted as a matrix product).
  scores = [jnp.ones(shape, jnp.float32)]
  for method in ('interpolate', 'bisect'):
    key, count = jax.jit(gsm_optax.global_threshold, static_argnums=(1, 2))(
        scores, 2**24 + 1, method)
    assert int(count) == scores[0].size
    assert float(gsm_optax.key_to_score(key, jnp.float32)) == 1.0


@pytest.mark.parametrize('shape', [(784, 300), (64, 64), (31, 100), (100, 10),
                                   (40, 20000), (3, 3, 64, 64), (1000,),
                                   (1, 1, 256, 128), (1, 64, 1, 100)])
def test_count_kernels_agree_with_numpy(shape):
  # The portable count and the XLA:CPU matrix count both run here on CPU.
  # pylint: disable=import-outside-toplevel
  from gsm_optax._src.selection import counting
  from gsm_optax._src.selection import counting_cpu
  rng = np.random.default_rng(0)
  t = np.abs(rng.standard_normal(shape)).astype(np.float32)
  t.reshape(-1)[::7] = 0.5  # ties at a candidate
  # Non-finite and denormal scores count by their keys: NaN above +inf
  # above every finite score, a denormal below every normal one.
  t.reshape(-1)[3::101] = np.nan
  t.reshape(-1)[5::103] = np.inf
  t.reshape(-1)[9::107] = 1e-40
  keys = t.view(np.int32)
  for value in (0.5, float(np.nanmedian(t)), 3.0, 1e-30, 100.0,
                float(np.finfo(np.float32).tiny), 3e38):
    expected = np.sum(keys >= np.float32(value).view(np.int32))
    kernels = [counting.count_leaf]
    if counting_cpu.matrix_shape(shape) is not None:
      kernels.append(counting_cpu.count_matrix)
    for kernel in kernels:
      count = jax.jit(kernel, static_argnames='dtype')(
          jnp.asarray(t), jnp.float32(value), dtype=jnp.int32)
      assert int(count) == expected, (kernel, value)
    key = jnp.float32(value).view(jnp.int32)
    assert int(jax.jit(counting.count_float)([jnp.asarray(t)], key)) == expected


def test_cpu_matrix_count_takes_the_kernel_matrices():
  from gsm_optax._src.selection import counting_cpu  # pylint: disable=import-outside-toplevel
  assert counting_cpu.matrix_shape((784, 300)) == (784, 300)
  assert counting_cpu.matrix_shape((1, 1, 256, 128)) == (256, 128)
  for other in ((3, 3, 64, 64), (1000,), (31, 100), (100, 10), (40, 20000)):
    assert counting_cpu.matrix_shape(other) is None


def _compiled_search(shape, method='interpolate'):
  return jax.jit(lambda s: gsm_optax.global_threshold(s, 100, method)).lower(
      [jnp.ones(shape, jnp.float32)]).compile().as_text()


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='XLA:CPU route')
def test_cpu_counts_matrices_as_a_product_and_others_by_reduction():
  assert ' dot(' in _compiled_search((784, 300))
  assert ' dot(' in _compiled_search((1, 1, 256, 128))  # a 1x1 conv kernel
  assert ' dot(' not in _compiled_search((3, 3, 64, 64))


@pytest.mark.parametrize('method', ['interpolate', 'bisect'])
def test_searches_write_no_copy_of_the_keys(method):
  # The integer keys (for non-finite scores) are compared where they are
  # made; a copy of all of them would cost a pass over memory every step.
  text = _compiled_search((784, 300), method)
  assert 's32[784,300]' not in text[text.index('ENTRY'):]


def wide_scores(kind, rng, n=20000):
  """Larger score sets whose shapes make the interpolation search work."""
  if kind == 'lognormal':
    x = np.exp(5 * rng.standard_normal(n))
  elif kind == 'uniform':
    x = rng.random(n)
  elif kind == 'two_clusters':
    x = np.where(rng.random(n) < 0.5, 1e-30, 1e30) * rng.random(n)
  elif kind == 'ties_at_answer':
    x = np.where(rng.random(n) < 0.3, 0.25, rng.random(n))
  elif kind == 'mostly_zero':  # for large Q the answer is 0
    x = np.where(rng.random(n) < 0.02, rng.random(n), 0.0)
  elif kind == 'denormal_answer':  # normal scores above denormal ones
    x = np.where(rng.random(n) < 0.05, rng.random(n),
                 rng.integers(1, 9, n) * 1e-45)
  elif kind == 'with_nonfinite':  # a few NaN and inf above log-normal scores
    x = np.exp(5 * rng.standard_normal(n))
    x[rng.random(n) < 0.002] = np.nan
    x[rng.random(n) < 0.002] = np.inf
  else:
    raise ValueError(kind)
  x = x.astype(np.float32)
  return [jnp.asarray(x[:n // 2].reshape(100, -1)), jnp.asarray(x[n // 2:])]


@pytest.mark.parametrize('kind', ['lognormal', 'uniform', 'two_clusters',
                                  'ties_at_answer', 'mostly_zero',
                                  'denormal_answer', 'with_nonfinite'])
@pytest.mark.parametrize('passes', [1, 3, None])
def test_interpolate_is_exact_before_and_after_it_bisects(
    kind, passes, monkeypatch):
  # passes=1 or 3: the search bisects after so many interpolation passes.
  from gsm_optax._src.selection import search  # pylint: disable=import-outside-toplevel
  if passes is not None:
    monkeypatch.setattr(search, '_INTERPOLATION_PASSES', passes)
  scores = wide_scores(kind, np.random.default_rng(3))
  all_keys = np.concatenate([np.asarray(s).ravel().view(np.int32)
                             for s in scores])
  f = jax.jit(lambda s, q: gsm_optax.global_threshold(s, q, 'interpolate'))
  for q in (1, 2, 37, 2000, 6667, 19999, 20000):
    expected = numpy_kth_key(scores, q)
    key, n = f(scores, q)
    assert int(key) == expected, q
    assert int(n) == np.sum(all_keys >= expected), q


GUESSES = (0.0, -1.0, 1e-40, float(np.finfo(np.float32).tiny), 1e-6, 0.3,
           1.0, 1e30, 3.4e38, np.inf, np.nan)


@pytest.mark.parametrize('kind', ['lognormal', 'two_clusters', 'ties_at_answer',
                                  'mostly_zero', 'denormal_answer',
                                  'with_nonfinite'])
def test_interpolate_result_does_not_depend_on_its_guess(kind):
  # keep_top_taylor starts the search from the last step's threshold: a
  # good, bad or invalid start must give the same key and count.
  scores = wide_scores(kind, np.random.default_rng(4))
  keys = np.sort(np.concatenate([np.asarray(s).ravel().view(np.int32)
                                 for s in scores]))[::-1]
  f = jax.jit(lambda s, q, g: gsm_optax.global_threshold(
      s, q, 'interpolate', guess=g))
  for q in (1, 37, 333, 2000, 6667, 19999):
    answer = float(keys[q - 1].view(np.float32))
    for guess in GUESSES + (answer, answer * 1.01, answer * 0.99):
      key, n = f(scores, q, jnp.float32(guess))
      assert int(key) == keys[q - 1], (q, guess)
      assert int(n) == np.sum(keys >= keys[q - 1]), (q, guess)


@pytest.mark.parametrize('kind', ['random', 'ties', 'zeros', 'huge_tiny',
                                  'denormal_only', 'nonfinite', 'all_equal',
                                  'one_bucket'])
@pytest.mark.parametrize('method', gsm_optax.SELECTION_METHODS)
def test_mask_key_masks_the_scores_at_or_above_the_threshold(kind, method):
  # The mask compares keys with mask_key, which may lie below the
  # threshold; it must select exactly the scores >= the threshold.
  from gsm_optax._src.selection import search  # pylint: disable=import-outside-toplevel
  scores = adversarial_scores(kind, np.random.default_rng(7))
  all_keys = np.concatenate([np.asarray(s).ravel().view(np.int32)
                             for s in scores])
  for q in (1, 2, 17, 100, 236, 237):
    top = jax.jit(search.select_top_q, static_argnums=(1, 2))(
        scores, q, method)
    expected = numpy_kth_key(scores, q)
    assert int(top.threshold_key) == expected
    np.testing.assert_array_equal(all_keys >= int(top.mask_key),
                                  all_keys >= expected)
    assert int(top.num_active) == np.sum(all_keys >= expected)


@pytest.mark.parametrize('rows, cols', [(40, 50), (32, 64)])
@pytest.mark.parametrize('method', ['interpolate', 'bisect', 'radix'])
def test_searches_are_exact_on_float64_scores(method, rows, cols):
  rng = np.random.default_rng(5)
  with jax.enable_x64(True):
    x = np.concatenate([np.exp(20 * rng.standard_normal(3000)),
                        np.full(500, 1e-310), np.zeros(500),
                        np.full(300, 2.0**-1000)])
    # Rows of 50 are reduced, rows of 64 counted as a matrix product.
    scores = [jnp.asarray(x[:rows * cols].reshape(rows, cols)),
              jnp.asarray(x[rows * cols:])]
    keys = np.sort(x.view(np.int64))[::-1]
    f = jax.jit(lambda s, q: gsm_optax.global_threshold(s, q, method))
    for q in (1, 10, 1500, 3001, 3400, 3700, 4300):
      key, n = f(scores, q)
      assert key.dtype == jnp.int64
      assert int(key) == keys[q - 1], q
      assert int(n) == np.sum(keys >= keys[q - 1]), q

