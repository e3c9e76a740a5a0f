"""Q = floor(N / C) exactly, for a concrete and a traced ratio alike."""

import fractions

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gsm_optax
from gsm_optax._src.spec import ratio as ratio_lib

RESNET50_KERNELS = 25_502_912
SIZES = [1, 7, 1000, 266_200, 430_500, 1_100_000, 2**24 - 1, 2**24, 2**24 + 1,
         RESNET50_KERNELS, 2**31 - 1]


def exact_q(n, c):
  return int(fractions.Fraction(n) // fractions.Fraction(float(c)))


def adversarial_ratios(n, dtype):
  """Ratios next to N / k for integers k, where any slack shows."""
  ratios = [1.0, 1.5, 5.0, 10.0, 60.0, 125.0, 300.0, 1 / dtype(0.2),
            1 / dtype(0.1), 1 / dtype(0.3), 1 / dtype(1 / 60)]
  for k in sorted({1, 2, 3, 7, n // 3 + 1, n // 2 + 1, n, 733_333, 4436,
                   2**23 + 1, 2**24 - 3} - {0}):
    if k > n:
      continue
    c = dtype(n) / dtype(k)
    ratios += [c, np.nextafter(c, dtype(np.inf)), np.nextafter(c, dtype(0))]
  ratios = np.asarray(ratios, dtype)
  return np.asarray([c for c in ratios if c >= 1 and exact_q(n, c) >= 1], dtype)


@pytest.mark.parametrize('n', SIZES)
def test_traced_float32_ratio_gives_exactly_floor_n_over_c(n):
  ratios = adversarial_ratios(n, np.float32)
  traced = jax.jit(jax.vmap(lambda c: ratio_lib.num_to_keep(n, c)))(ratios)
  expected = [exact_q(n, c) for c in ratios]
  assert [int(q) for q in traced] == expected
  # A ratio float32 represents gives the same Q as a Python float.
  assert [ratio_lib.num_to_keep(n, float(c)) for c in ratios] == expected


@pytest.mark.parametrize('n', [1000, 1_100_000, 2**24 + 1, RESNET50_KERNELS,
                               2**31 - 1, 2**40 + 3])
def test_traced_float64_ratio_gives_exactly_floor_n_over_c(n):
  with jax.enable_x64(True):
    ratios = adversarial_ratios(n, np.float64)
    traced = jax.jit(jax.vmap(lambda c: ratio_lib.num_to_keep(n, c)))(
        jnp.asarray(ratios))
    assert traced.dtype == jnp.int64
    assert [int(q) for q in traced] == [exact_q(n, c) for c in ratios]


def test_known_counts():
  # The cases that a relative slack of 2**-20 got wrong, and the paper's.
  assert ratio_lib.num_to_keep(1_100_000, 1.5) == 733_333
  traced = jax.jit(lambda c: ratio_lib.num_to_keep(1_100_000, c))
  assert int(traced(np.float32(1.5))) == 733_333
  resnet50 = jax.jit(lambda r: ratio_lib.num_to_keep(RESNET50_KERNELS, r))
  for c, q in ((1.5, 17_001_941), (5.0, 5_100_582), (10.0, 2_550_291),
               (60.0, 425_048), (125.0, 204_023), (300.0, 85_009)):
    assert int(resnet50(np.float32(c))) == q == exact_q(RESNET50_KERNELS, c)
  assert ratio_lib.num_to_keep(266_200, 60.0) == 4436
  assert ratio_lib.num_to_keep(10, 1 / 0.2) == 2  # 1 / 0.2 == 5.0 in f64
  third = np.float32(1) / np.float32(0.3)  # in float32, just below 10 / 3
  assert ratio_lib.num_to_keep(10, third) == 3 == exact_q(10, third)


def test_integer_traced_ratio():
  q = jax.jit(lambda c: ratio_lib.num_to_keep(1_100_000, c))(np.int32(3))
  assert int(q) == 366_666


def test_traced_and_python_ratio_give_identical_masks():
  # 1.1M scores at ratio 1.5: the old slack kept 733,334 here.
  rng = np.random.default_rng(0)
  params = {'w': jnp.asarray(rng.normal(size=(1100, 1000)), jnp.float32)}
  grads = {'w': jnp.asarray(rng.normal(size=(1100, 1000)), jnp.float32)}
  plain = gsm_optax.keep_top_taylor(1.5)
  u_plain, s_plain = jax.jit(plain.update)(grads, plain.init(params), params)
  injected = optax.inject_hyperparams(gsm_optax.keep_top_taylor)(ratio=1.5)
  u_inj, s_inj = jax.jit(injected.update)(grads, injected.init(params), params)
  assert int(s_plain.num_active) == int(s_inj.inner_state.num_active) == 733_333
  np.testing.assert_array_equal(u_plain['w'], u_inj['w'])


def test_floor_divide_doc_example_matches_fraction_on_random_pairs():
  # 200 pairs: 20 counts (each a compiled program) times 10 ratios (vmapped).
  rng = np.random.default_rng(1)
  n = rng.integers(1, 2**31 - 1, size=20)
  c = np.exp(rng.uniform(0, np.log(1e6), size=(20, 10))).astype(np.float32)
  for ni, row in zip(n, c):
    got = jax.jit(jax.vmap(lambda r, ni=int(ni): ratio_lib.floor_divide(
        ni, r)))(row)
    for g, ci in zip(np.asarray(got), row):
      assert int(g) == exact_q(int(ni), ci), (ni, ci)
