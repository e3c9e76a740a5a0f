"""Each search reports the passes it made over all scores (`TopQ.passes`):
against a NumPy reference for the bisection, known counts, the bound."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_select import adversarial_scores
from test_select import numpy_kth_key


def _bisect_passes_reference(keys, q):
  """The bit-by-bit search in NumPy: passes until exactly Q keys reach the
  prefix (then one more for their minimum) or the last bit."""
  keys = np.sort(keys)[::-1]
  prefix, n_prefix, passes = 0, keys.size, 0
  for bit in range(30, -1, -1):
    if n_prefix == q:
      break
    n = int(np.sum(keys >= (prefix | (1 << bit))))
    passes += 1
    if n >= q:
      prefix, n_prefix = prefix | (1 << bit), n
  return passes + (n_prefix == q)


@pytest.mark.parametrize('kind', ['random', 'ties', 'zeros', 'denormal_only',
                                  'nonfinite'])
def test_each_search_reports_the_passes_it_made(kind):
  from gsm_optax._src.selection import search  # pylint: disable=import-outside-toplevel
  scores = adversarial_scores(kind, np.random.default_rng(3))
  all_keys = np.concatenate([np.asarray(s).ravel().view(np.int32)
                             for s in scores])
  select = jax.jit(search.select_top_q, static_argnums=(1, 2))
  for q in (1, 17, 236, 237):
    expected = numpy_kth_key(scores, q)
    bisect = select(scores, q, 'bisect')
    assert int(bisect.passes) == _bisect_passes_reference(all_keys, q)
    assert int(select(scores, q, 'top_k').passes) == 1
    # From the mean: the mean's pass, the counts, the minimum; a normal
    # finite answer needs at most 16 + 31 counts, a handover 31 more.
    top = select(scores, q, 'interpolate')
    assert int(top.threshold_key) == expected
    assert 2 <= int(top.passes) <= 1 + 16 + 31 + 31 + 1
    # Started at the answer itself, reached by exactly Q scores: one count
    # finds it and one takes the minimum.
    guess = all_keys[all_keys >= expected].view(np.float32).min()
    reached = int(np.sum(all_keys >= expected))
    if q == all_keys.size:  # Q = N: the least of all, in one pass (and
      assert int(bisect.passes) == 1  # the mean's, from the mean)
      assert int(top.passes) == 2
    elif reached == q and 0x00800000 <= expected < 0x7f800000:
      at_answer = jax.jit(lambda s, g: search.select_top_q(
          s, q, 'interpolate', guess=g))(scores, jnp.float32(guess))
      assert int(at_answer.passes) == 2
