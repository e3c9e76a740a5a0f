"""The Pallas kernel of the radix route's passes (for GPUs), run in Pallas's
interpreter on the CPU and compiled on a GPU (benchmarks/gpu_check.sh): its
counts equal NumPy's, and radix select counted by it finds the Q-th largest
key on hard inputs."""


import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_select import adversarial_scores
from test_select import numpy_kth_key

from gsm_optax._src.selection import keys as keys_lib
from gsm_optax._src.selection import pallas_radix
from gsm_optax._src.selection import radix
from gsm_optax._src.selection import search

# On a GPU the kernel is compiled (Triton) and run on the hardware.
INTERPRET = jax.default_backend() != 'gpu'


def bits(scores):
  return np.concatenate([np.asarray(s, np.float32).ravel().view(np.int32)
                         for s in scores])


def numpy_histogram(keys, prefix, high, shift):
  keys = keys[(keys >> high) == prefix]
  return np.bincount((keys >> shift) & (2 ** (high - shift) - 1),
                     minlength=2 ** (high - shift))


@pytest.mark.parametrize('products', [False, True])
def test_counts_equal_numpy(products):
  rng = np.random.default_rng(0)
  # A leaf over one block and a partial one, a small leaf, an empty one.
  shapes = [(90, 100), (13,), (0, 4)]
  g = [rng.standard_normal(s).astype(np.float32) for s in shapes]
  w = [rng.standard_normal(s).astype(np.float32) for s in shapes]
  if products:
    arrays = [jnp.asarray(a) for pair in zip(g, w) for a in pair]
    scores = keys_lib.taylor_scores([jnp.asarray(a) for a in g],
                                    [jnp.asarray(a) for a in w])
  else:
    # Scores as given, NaN, inf and a negative one (counted in no bucket).
    g[0].ravel()[:3] = [np.nan, np.inf, -1.0]
    arrays = scores = [jnp.asarray(a) for a in g]
  keys = bits(scores)
  top = int(np.median(keys[keys >= 0])) >> 23
  for prefix, high, shift in ((0, 31, 23), (top, 23, 15), (top, 23, 16)):
    counts = pallas_radix.histogram(jnp.int32(prefix), arrays, high, shift,
                                    products, interpret=INTERPRET)
    np.testing.assert_array_equal(counts,
                                  numpy_histogram(keys, prefix, high, shift))


def test_more_than_eight_bits_a_pass_is_refused():
  with pytest.raises(ValueError, match='at most 8 bits'):
    pallas_radix.histogram(jnp.int32(0), [jnp.ones(4)], 31, 20, False,
                           interpret=INTERPRET)


@pytest.mark.parametrize('kind', ['ties', 'huge_tiny', 'nonfinite',
                                  'one_bucket'])
def test_radix_select_counted_by_the_kernel_is_exact(kind):
  scores = [jnp.asarray(s, jnp.float32)
            for s in adversarial_scores(kind, np.random.default_rng(1))]
  histogram = lambda prefix, above, high, shift, width: radix.rank_counts(
      pallas_radix.histogram(prefix.astype(jnp.int32), scores, high, shift,
                             False, interpret=INTERPRET), above)
  n = sum(s.size for s in scores)
  for q in (1, 17, n):
    key, count, passes = radix.radix_select(scores, q, pallas_radix.DIGITS,
                                            histogram)
    expected = numpy_kth_key(scores, q)
    assert int(key) == expected, (kind, q)
    assert int(count) == int(np.sum(bits(scores) >= expected))
    assert int(passes) == len(pallas_radix.DIGITS)




@pytest.mark.parametrize('products', [False, True])
def test_the_gpu_route_lowers_to_a_triton_kernel_when_asked(monkeypatch,
                                                            products):
  # Lowered for CUDA on this CPU machine: the kernel goes through Pallas's
  # Triton lowering (compiling it for a GPU, and timing it, need one).
  g, w = [jnp.ones((100, 30)), jnp.ones(7)], [jnp.ones((100, 30)), jnp.ones(7)]

  def lowered():
    f = jax.jit(lambda g, w: search.select_top_q(
        keys_lib.taylor_scores(g, w), 5, 'radix',
        factors=(g, w) if products else None).threshold_key)
    return f.trace(g, w).lower(lowering_platforms=('cuda',)).as_text()

  triton = '__gpu$xla.gpu.triton'
  assert triton not in lowered()  # opt-in only
  monkeypatch.setenv('GSM_OPTAX_PALLAS', '1')
  assert triton in lowered()


def test_a_pass_of_the_partitioned_route_is_a_radix_pass(monkeypatch):
  # native_radix asks a pass for bins of keys from a lower end `lo`, and one
  # count above them; on a GPU that is a Pallas pass over the prefix lo
  # names (its keys above are not counted: radix passes do not read them).
  from gsm_optax._src.selection import native_radix  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(pallas_radix, 'histogram', functools.partial(
      pallas_radix.histogram, interpret=INTERPRET))
  scores = [jnp.asarray(s, jnp.float32)
            for s in adversarial_scores('huge_tiny', np.random.default_rng(2))]
  keys = bits(scores)
  prefix, high, shift = 0x3f, 23, 15  # keys k >> 23 == 0x3f, by bits 15-22
  counts = native_radix._pallas_count(
      jnp.int32(prefix << high), scores, native_radix.Count(shift, 2 ** 8),
      False)
  inside = keys[(keys >> high) == prefix]
  expected = np.bincount((inside >> shift) & 255, minlength=256)
  np.testing.assert_array_equal(np.asarray(counts), np.append(expected, 0))
