"""Exact global selection of the Q-th largest score across many arrays.

Four routes give the *identical* threshold (and mask), and ``'auto'`` (the
default) takes one of them (`auto_route`): ``'radix'`` on the CPU where its
kernel applies, else ``'interpolate'``.

* ``'interpolate'``: a search that counts ``score >= candidate``
  over all scores once per pass (`counting`) and picks each candidate from
  the counts so far: first a guess (`keep_top_taylor` passes the last
  step's threshold) or the mean score, then regula falsi (Illinois variant)
  on the logarithm of the count against the score's key. After
  ``_INTERPOLATION_PASSES`` passes it bisects what is left, so it needs at
  most that plus 31 counting passes (and one for the mean, without a
  guess) to find a Q-th largest score that is a normal finite number. One
  below the smallest normal number, or not finite, then goes to the
  ``'bisect'`` route: up to 31 more.
* ``'bisect'``: at most 31 passes (63 for float64) on the keys: bit by bit
  from the top, the search keeps the largest key ``c`` with
  ``count(key >= c) >= Q``, which is the Q-th largest key. Once exactly Q
  keys reach the prefix, the least of them is that key: one pass taking a
  minimum replaces the remaining passes.
* ``'radix'``: radix select (`radix`): always 3 histogram passes (6 for
  float64), no data-dependent loop; for float32 on the CPU counted by a
  kernel of our own on every core, all three in one call where the scores
  are not split over devices (`native_radix`), and from
  `native_radix.SAMPLED_FROM` scores on sampled: one pass over a window of
  keys that a sample places, two more where the window misses. Sharded,
  each pass (and the sample) is one all-reduce of its counts.
* ``'top_k'``: ``jax.lax.top_k`` on the concatenated keys. Needs a static Q
  and gathers every score; kept as the reference and for small models.

The two searches count per array and add the counts up, so no concatenated
copy of the scores is built, Q may be traced, and sharded arrays need one
all-reduce of a scalar per array and pass, never a gather. When a search
stops at a key reached by exactly Q scores, that key already masks the
right Q scores (`TopQ.mask_key`); the pass that finds the least of them,
the threshold's value, is not on the update's path. How many passes each
route makes on real scores, and what a pass costs, is measured in
``benchmarks/speed`` and reported in the docs (performance page).

Long because the interpolation search's bracket, its guess and its
hand-over to the bisection are one piece, kept beside the routes it must
agree with.
"""

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gsm_optax._src.selection import counting
from gsm_optax._src.selection import keys
from gsm_optax._src.selection import native_radix

METHODS = ('auto', 'interpolate', 'bisect', 'radix', 'top_k')

# The interpolation search: its second candidate assumes that the number of
# scores above x falls like x**-_TAIL_EXPONENT, and later steps outside the
# bracket clip the measured slope to [1/8, 4] times 1/_TAIL_EXPONENT e-folds
# of the score per e-fold of the count. After _INTERPOLATION_PASSES passes
# the search bisects what is left. Tuned on LeNet-300's real scores and on
# random uniform, log-normal and two-cluster scores; the passes each search
# makes (`TopQ.passes`) are what benchmarks/speed/search_passes.py reports.
_TAIL_EXPONENT = 1.5
_INTERPOLATION_PASSES = 16


class TopQ(NamedTuple):
  """Where the Q largest scores start, as keys (see `score_keys`)."""
  mask_key: jax.Array  # key >= mask_key selects exactly the scores >= threshold
  num_active: jax.Array  # count(key >= threshold_key), >= Q (ties kept)
  threshold_key: jax.Array  # the Q-th largest key
  # The passes the search made over all scores (each a count, the mean or
  # the minimum: one reduction per array, an all-reduce when sharded);
  # 'top_k' makes one count beside its sort. Measured, never estimated.
  passes: jax.Array


def bisect_key(scores: Sequence[jax.Array], q) -> TopQ:
  score_dtype = scores[0].dtype
  key_dtype = keys.key_dtype(score_dtype)
  nbits = 8 * key_dtype.itemsize - 1  # the sign bit of |x| is always 0
  floor_key, inf_key = keys.float_key_range(score_dtype)
  countable = counting.countable_in_float(scores)
  total = sum(t.size for t in scores)
  q = jnp.asarray(q, key_dtype)

  def count(candidate):
    if not countable:
      return counting.count_exact(scores, candidate)
    return jax.lax.cond((candidate >= floor_key) & (candidate < inf_key),
                        lambda c: counting.count_float(scores, c),
                        lambda c: counting.count_exact(scores, c), candidate)

  def undecided(carry):
    i, _, n_prefix = carry
    return (i < nbits) & (n_prefix != q)

  def set_next_bit(carry):
    i, prefix, n_prefix = carry
    candidate = prefix | (jnp.asarray(1, key_dtype) << (nbits - 1 - i))
    n = count(candidate)
    take = n >= q
    return (i + 1, jnp.where(take, candidate, prefix),
            jnp.where(take, n, n_prefix))

  init = (jnp.zeros((), jnp.int32), jnp.zeros((), key_dtype),
          jnp.asarray(total, key_dtype))
  passes, prefix, n_prefix = jax.lax.while_loop(undecided, set_next_bit, init)
  # Exactly Q keys reach the prefix: the Q-th largest is the least of them,
  # and the prefix selects the same Q. Stopping there saves the remaining
  # passes (about a third of them on real scores, see
  # benchmarks/speed/search_passes.py); the pass taking the minimum is needed
  # only for the threshold's value, not for the mask.
  key = jax.lax.cond(n_prefix == q, lambda p: counting.least_at_least(scores, p),
                     lambda p: p, prefix)
  return TopQ(prefix, n_prefix, key, passes + (n_prefix == q).astype(jnp.int32))


def _interpolate_key(scores: Sequence[jax.Array], q, guess=None) -> TopQ:
  """The Q-th largest key by regula falsi on log(count) against the key.

  The search keeps ``lo < hi`` with ``count(key >= lo) >= Q`` (``n_lo``)
  and ``count(key >= hi) < Q`` (``n_hi``). It starts from ``lo`` = the
  smallest normal number, ``hi`` = +inf and a first candidate: ``guess``
  if it is a normal finite number (`keep_top_taylor` passes the last
  step's threshold), else the mean score (one more pass). While ``lo`` or
  ``hi`` is still where it started, the next candidate moves from the last
  one as if ``log(count)`` fell with slope ``_TAIL_EXPONENT`` in
  ``log(score)`` (the key is ``2**nmant * log2(score)`` up to a piecewise
  linear error), or with the slope measured between the last two
  candidates, within limits; once both ends moved, it interpolates
  ``log(count)`` linearly between them, halving the weight of an end kept
  twice in a row (Illinois). It stops when ``n_lo == Q`` (then ``lo``
  selects the same Q scores as the answer, the least key ``>= lo``, which
  one more pass finds for the threshold's value) or ``hi == lo + 1``.
  Every candidate is normal and finite, so the float counts are exact
  whatever the scores (see `keys.at_least_value`). If the answer is below the
  smallest normal number (``lo`` never moved) or not finite (``hi`` never
  moved, and ``lo`` did not stop at exactly Q), the search hands over to
  `bisect_key`.
  """
  score_dtype = scores[0].dtype
  key_dtype = keys.key_dtype(score_dtype)
  info = np.finfo(score_dtype)
  if not counting.countable_in_float(scores):
    return bisect_key(scores, q)
  floor_key, inf_key = keys.float_key_range(score_dtype)
  total = sum(t.size for t in scores)
  q = jnp.asarray(q, key_dtype)
  keys_per_efold = np.asarray(2.0**info.nmant / np.log(2.0), score_dtype)
  one = jnp.ones((), score_dtype)

  def log_ratio(n):
    # log(n / Q) from the exact difference n - Q (a count of 0 read as 1/2),
    # so that counts next to a large Q still differ.
    excess = (n - q).astype(score_dtype) + jnp.where(n == 0, 0.5, 0.0).astype(
        score_dtype)
    return jnp.log1p(excess / q.astype(score_dtype))

  def searching(carry):
    lo, n_lo, hi = carry[1], carry[2], carry[3]
    return (n_lo != q) & (hi - lo > 1)

  def next_pass(carry):
    i, lo, n_lo, hi, n_hi, candidate, kept, w_lo, w_hi, last, n_last = carry
    candidate = jnp.clip(candidate, lo + 1, hi - 1)
    n = counting.count_float(scores, candidate)
    # Keys per e-fold of the count: assumed, or measured from the last pass.
    rise = log_ratio(n_last) - log_ratio(n)
    measured = jnp.abs((candidate - last).astype(score_dtype) /
                       jnp.where(rise == 0, 1, rise))
    slope = jnp.where((i == 0) | (rise == 0), keys_per_efold / _TAIL_EXPONENT,
                      jnp.clip(measured, keys_per_efold / (8 * _TAIL_EXPONENT),
                               keys_per_efold * 4 / _TAIL_EXPONENT))
    up = n >= q  # the candidate becomes the new lo; else the new hi
    lo, n_lo = jnp.where(up, candidate, lo), jnp.where(up, n, n_lo)
    hi, n_hi = jnp.where(up, hi, candidate), jnp.where(up, n_hi, n)
    # Illinois: an end kept twice in a row counts half in the next step.
    w_hi = jnp.where(up, jnp.where(kept == 1, w_hi / 2, w_hi), one)
    w_lo = jnp.where(up, one, jnp.where(kept == -1, w_lo / 2, w_lo))
    kept = jnp.where(up, 1, -1).astype(jnp.int32)
    width = (hi - lo).astype(score_dtype)
    step = (candidate - lo).astype(score_dtype) + log_ratio(n) * slope
    f_lo = log_ratio(n_lo) * w_lo
    f_hi = -log_ratio(n_hi) * w_hi
    interpolated = f_lo / (f_lo + f_hi) * width
    half = ((hi - lo) // 2).astype(score_dtype)
    open_bracket = (lo == floor_key) | (hi == inf_key)
    # A model step below lo (only while lo has not moved) tries lo + 1: if
    # fewer than Q scores reach it, the answer is not a normal number.
    step = jnp.where(step >= width, half, jnp.maximum(step, 1))
    offset = jnp.where(open_bracket, step, interpolated)
    offset = jnp.where(i + 1 >= _INTERPOLATION_PASSES, half, offset)
    offset = jnp.clip(offset, 1, width).astype(key_dtype)
    return (i + 1, lo, n_lo, hi, n_hi, lo + offset, kept, w_lo, w_hi,
            candidate, n)

  first, mean_passes = _first_candidate(scores, total, guess, floor_key,
                                        inf_key)
  init = (jnp.zeros((), jnp.int32), floor_key, jnp.asarray(total, key_dtype),
          inf_key, jnp.zeros((), key_dtype), first,
          jnp.zeros((), jnp.int32), one, one, first,
          jnp.zeros((), key_dtype))
  i, lo, n_lo, hi = jax.lax.while_loop(searching, next_pass, init)[:4]
  passes = mean_passes + i

  def finish(lo, n_lo):
    key = jax.lax.cond(n_lo == q, lambda k: counting.least_at_least(scores, k),
                       lambda k: k, lo)
    return TopQ(lo, n_lo, key, passes + (n_lo == q).astype(jnp.int32))

  def hand_over(lo, n_lo):
    top = bisect_key(scores, q)
    return top._replace(passes=passes + top.passes)

  # lo never moved: the answer may be below the smallest normal number;
  # hi never moved and lo did not stop at exactly Q: it is not finite. A
  # search that stopped at exactly Q with hi unmoved (the answer among the
  # largest scores) is done: the least key >= lo is exact whatever it is.
  return jax.lax.cond((lo == floor_key) | ((hi == inf_key) & (n_lo != q)),
                      hand_over, finish, lo, n_lo)


def _first_candidate(scores, total, guess, floor_key, inf_key):
  """``guess``'s key if it is a normal finite number, else the mean's key;
  and the passes that took (1 for the mean, else 0).

  The mean costs a pass over all scores; a guess near the answer (the last
  step's threshold) saves it and, on LeNet-300, a pass or two of the search.
  """
  score_dtype = scores[0].dtype

  def mean_key():
    mean = (sum(jnp.sum(t) for t in scores) / total).astype(score_dtype)
    return (jax.lax.bitcast_convert_type(mean, floor_key.dtype),
            jnp.ones((), jnp.int32))

  if guess is None:
    return mean_key()
  guess_key = jax.lax.bitcast_convert_type(
      jnp.asarray(guess).astype(score_dtype), floor_key.dtype)
  return jax.lax.cond((guess_key >= floor_key) & (guess_key < inf_key),
                      lambda: (guess_key, jnp.zeros((), jnp.int32)), mean_key)


def radix_key(scores: Sequence[jax.Array], q, factors=None) -> TopQ:
  """The Q-th largest key by radix select (`native_radix.radix_select`)."""
  key, num_active, passes = native_radix.radix_select(scores, q, factors)
  return TopQ(key, num_active, key, passes)


def _top_k_key(scores: Sequence[jax.Array], q) -> TopQ:
  if isinstance(q, jax.core.Tracer):
    raise ValueError(
        "method='top_k' needs a static number of weights to keep (a Python "
        "`ratio`); with a traced ratio (e.g. under optax.inject_hyperparams) "
        "use method='interpolate' or method='bisect'.")
  flat = jnp.concatenate([k.reshape(-1) for k in keys.score_keys(scores)])
  key = jax.lax.top_k(flat, int(q))[0][-1]
  return TopQ(key, counting.count_exact(scores, key), key,
              jnp.ones((), jnp.int32))


def select_top_q(scores: Sequence[jax.Array], q, method: str = 'auto',
                 guess=None, factors=None) -> TopQ:
  """`global_threshold` with the key that masks: see `TopQ`.

  ``mask_key`` may lie below the threshold when no score lies between the
  two; comparing keys with it then selects the same scores, and the
  update need not wait for the pass that finds the threshold's value.
  ``guess`` (for ``'interpolate'``; the others ignore it) is where the
  search starts, e.g. the last step's threshold. ``factors`` (for
  ``'radix'``; the others ignore it): ``(gradients, params)`` whose
  ``|g * w|`` are the scores, which the CPU kernel then computes itself.
  ``'auto'`` passes both on to the route it takes.
  """
  if method not in METHODS:
    raise ValueError(f'`method` must be one of {METHODS}; got {method!r}.')
  scores = list(scores)
  if method == 'top_k':
    return _top_k_key(scores, q)
  if method == 'bisect':
    return bisect_key(scores, q)
  if method == 'radix':
    return radix_key(scores, q, factors)
  if method == 'auto':
    return _auto_key(scores, q, guess, factors)
  return _interpolate_key(scores, q, guess)


def auto_route(scores: Sequence[jax.Array]) -> str:
  """The route ``'auto'`` takes for ``scores`` on the CPU: ``'radix'``
  where its kernel applies (float32, built), else ``'interpolate'`` (which
  ``'auto'`` takes on every other platform). The measurements behind the
  rule: docs, selection."""
  return 'radix' if native_radix.applies(scores) else 'interpolate'


def _auto_key(scores, q, guess, factors) -> TopQ:
  if auto_route(scores) == 'interpolate':
    return _interpolate_key(scores, q, guess)
  # Both branches of platform_dependent must give the same dtypes.
  int32_count = lambda top: top._replace(
      num_active=top.num_active.astype(jnp.int32))
  return jax.lax.platform_dependent(
      cpu=lambda: int32_count(radix_key(scores, q, factors)),
      default=lambda: int32_count(_interpolate_key(scores, q, guess)))


def global_threshold(scores: Sequence[jax.Array], q,
                     method: str = 'auto',
                     guess=None) -> tuple[jax.Array, jax.Array]:
  """The Q-th largest score over all arrays, and how many scores reach it.

  Args:
    scores: non-negative score arrays (e.g. from `taylor_scores`), all of one
      float dtype.
    q: how many to keep, ``1 <= q <= total size``; may be traced for every
      route but ``'top_k'``.
    method: ``'auto'`` (default: `auto_route`), ``'interpolate'``,
      ``'bisect'``, ``'radix'`` (all sort-free) or ``'top_k'``; all give the
      same result (see the module docstring).
    guess: optional, for ``'interpolate'``: a score near the answer (say the
      last step's threshold) to start the search from; a guess that is not
      a positive normal finite number is ignored. It changes how many passes
      the search makes, never its result.

  Returns:
    ``(threshold_key, num_at_least)``: the Q-th largest score as an integer
    bit pattern (see `score_keys`; compare keys, not floats, to keep NaN
    ordering), and ``count(score >= threshold) >= q`` (ties are kept).

  Example:
    >>> import jax.numpy as jnp
    >>> from gsm_optax import global_threshold, key_to_score
    >>> key, n = global_threshold([jnp.array([3., 1.]), jnp.array([[2.]])], 2)
    >>> float(key_to_score(key, jnp.float32)), int(n)
    (2.0, 2)
  """
  top = select_top_q(scores, q, method, guess)
  return top.threshold_key, top.num_active
