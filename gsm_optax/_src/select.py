"""Exact global selection of the Q-th largest score across many arrays.

Three routes give the *identical* threshold:

* ``'interpolate'`` (default): a search that counts ``score >= candidate``
  over all scores once per pass and picks each candidate from the counts so
  far: first a guess (`keep_top_taylor` passes the last step's threshold)
  or the mean score, then by regula falsi (Illinois variant) on the
  logarithm of the count against the score's bit pattern. On the real
  scores of LeNet-300-100 it needs 8 to 10 passes on average, where
  bisection needs 19 to 24 (`benchmarks/search_passes.py`). After 16 passes
  it bisects what is left, so it never needs more than 16 + 31 passes.
  A Q-th largest score below the smallest normal number, or not finite,
  goes to the ``'bisect'`` route.
* ``'bisect'``: a search of at most 31 passes (63 for float64)
  on the bit pattern of the scores. For non-negative IEEE floats the bit
  pattern, read as an integer "key", orders exactly like the value, with NaN
  above +inf. Bit by bit from the top, the search keeps the largest key ``c``
  with ``count(key >= c) >= Q``, which is the Q-th largest key. Once exactly
  Q keys reach the prefix, the least of them is that key: one pass taking a
  minimum replaces the remaining passes.
* ``'top_k'``: ``jax.lax.top_k`` on the concatenated keys. Needs a static Q and
  gathers every score; kept as the reference and for small models.

The two searches count per leaf and add the counts up, so no concatenated
copy of the scores is built; Q may be traced; and when the arrays are
sharded, each pass is a local count plus an all-reduce of one scalar per
leaf (on XLA:CPU, of one count per row for a matrix split along its last
axis, see `_count_leaf_cpu`), never a gather. When a search stops at a key
reached by exactly Q scores, that key already masks the right Q scores
(`TopQ.mask_key`); the pass that finds the least of them, the threshold's
value, is not on the update's path.

Each count compares the scores as floats against the candidate's value and
sums the 0/1 results in float. On XLA:CPU (jax 0.10.2, LeNet-300's scores)
this ran the search 1.9x faster than the float step-function kernel used
before, and faster than summing integer comparisons of the keys; stopping
early gained another 1.14x (`benchmarks.step_overhead` times whole steps).
On XLA:CPU a matrix's 0/1 results are summed as a product with a vector of
ones, which XLA fuses with the comparison (`_count_leaf_cpu`). The integer
keys are made only where they are compared, never written out. Against a
normal finite candidate the float comparison orders like the keys for every
score: ``not (score < candidate)`` counts NaN and inf as above, and under
XLA:CPU's flush-to-zero a denormal score reads as 0, still below
(`_at_least_value`). Against other candidates (denormal, zero, or not
finite: the bisection's first bits), exact integer comparisons of the keys
are used.
"""

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

METHODS = ('interpolate', 'bisect', 'top_k')
# Counting in float: partial sums of ones stay exact up to 2**24 in float32.
_F32_EXACT_COUNT = 2**24


def taylor_scores(updates: Sequence[jax.Array],
                  params: Sequence[jax.Array]) -> list[jax.Array]:
  """First-order Taylor scores ``T = |g * w|`` (Ding et al. 2019, Eq. 7).

  Scores are computed in float32 (float64 if any input is float64). The
  product of two bfloat16 or float16 numbers is exact in float32, so low
  precision parameters are ranked without rounding.

  Args:
    updates: the gradients, one array per prunable leaf.
    params: the parameters, with the same shapes.

  Returns:
    One non-negative score array per leaf.
  """
  dtype = _score_dtype(list(updates) + list(params))
  return [jnp.abs(g.astype(dtype) * w.astype(dtype))
          for g, w in zip(updates, params)]


def magnitude_scores(params: Sequence[jax.Array]) -> list[jax.Array]:
  """Magnitudes ``|w|`` in the scores' dtype (float32, or float64 if any)."""
  dtype = _score_dtype(params)
  return [jnp.abs(w.astype(dtype)) for w in params]


def _score_dtype(arrays: Sequence[jax.Array]) -> jnp.dtype:
  if any(jnp.dtype(a.dtype) == jnp.float64 for a in arrays):
    return jnp.dtype(jnp.float64)
  return jnp.dtype(jnp.float32)


def _key_dtype(score_dtype) -> jnp.dtype:
  return jnp.dtype(jnp.int64 if score_dtype == jnp.float64 else jnp.int32)


def score_keys(scores: Sequence[jax.Array]) -> list[jax.Array]:
  """Bit patterns of non-negative scores, as signed integers of equal width.

  The sign bit of ``|x|`` is 0 (also for NaN), so keys are non-negative and
  order like the scores; NaN ranks above +inf.
  """
  return [jax.lax.bitcast_convert_type(t, _key_dtype(t.dtype)) for t in scores]


def at_least(scores: Sequence[jax.Array], key: jax.Array) -> list[jax.Array]:
  """Masks ``score >= threshold`` per array, compared as keys (NaN > inf)."""
  return [k >= key for k in score_keys(scores)]


def key_to_score(key: jax.Array, score_dtype) -> jax.Array:
  """Inverse of `score_keys` for one key."""
  return jax.lax.bitcast_convert_type(key, jnp.dtype(score_dtype))


def _count_exact(scores: Sequence[jax.Array], key: jax.Array) -> jax.Array:
  # The keys are made where they are compared, so that no copy is written.
  return sum(jnp.sum(k >= key, dtype=key.dtype) for k in score_keys(scores))


def _count_float(scores: Sequence[jax.Array], key: jax.Array) -> jax.Array:
  """count(key(score) >= key), summed in float: exact for a normal finite
  key whatever the scores, and for leaves that `_exact_reduction_axes` can
  count."""
  value = key_to_score(key, scores[0].dtype)
  return sum(jax.lax.platform_dependent(
      t, value, cpu=functools.partial(_count_leaf_cpu, dtype=key.dtype),
      default=functools.partial(_count_leaf, dtype=key.dtype)) for t in scores)


def _at_least_value(t: jax.Array, value: jax.Array) -> jax.Array:
  """``key(t) >= key(value)`` for a normal, finite ``value``, in float.

  Written as ``not (t < value)`` so that a NaN score, whose key is above
  every other, counts as above, like +inf; a denormal score, read as 0
  under flush-to-zero, stays below. So the float count is exact for any
  scores, finite or not, against a normal finite candidate.
  """
  return jnp.logical_not(t < value)


def _count_leaf(t: jax.Array, value: jax.Array, dtype) -> jax.Array:
  """count(t >= value) as ``dtype``: a reduction of the 0/1 comparison."""
  # The 0/1 results as bfloat16 (exact), summed in the scores' dtype: on
  # XLA:CPU, which writes them out before reducing, a narrower array made
  # a pass about a quarter faster (benchmarks/search_kernels.py).
  step = _at_least_value(t, value).astype(jnp.bfloat16)
  # Reduce trailing axes while each partial count is exactly representable,
  # then add the partial counts as integers.
  axes = _exact_reduction_axes(t.shape, t.dtype)
  return jnp.sum(jnp.sum(step, axis=axes, dtype=t.dtype).astype(dtype))


# Matrix shapes for which the CPU count below was measured to be fast.
_ROW_MIN, _ROW_MAX, _ROWS_MIN = 64, 16384, 32


def _count_leaf_cpu(t: jax.Array, value: jax.Array, dtype) -> jax.Array:
  """`_count_leaf` for XLA:CPU: a matrix's 0/1 comparison times ones.

  XLA:CPU fuses the comparison, the transpose and the vector-matrix product
  into one loop over the scores, split over the cores; the reduction in
  `_count_leaf` writes the comparison out first. On 266,200 scores as rows
  of 200 a pass took 19 us against 32-51 us (jax 0.10.2, 2-core AMD EPYC;
  ``python -m benchmarks.search_kernels``). Each row's count is exact in
  float32 (a row has at most ``_ROW_MAX`` scores); the rows add up as
  integers. Only matrices take this route, also those with extra axes of
  size 1 (a 1x1 conv kernel): merging the axes of a 3x3 conv kernel makes
  XLA gather a kernel split over devices along an inner axis (tested), and
  without the merge the product was 4 to 30 times slower than the
  reduction (one-off measurements, 2026-11-22). Other arrays, and matrices
  with too few or too long rows (slow in the same measurements), take
  `_count_leaf`.
  """
  shape = _fast_matrix_shape(t.shape)
  if shape is None:
    return _count_leaf(t, value, dtype)
  rows = _at_least_value(t, value).astype(jnp.float32).reshape(shape)
  per_row = jnp.ones((shape[1],), jnp.float32) @ rows.T
  return jnp.sum(per_row.astype(dtype))


def _fast_matrix_shape(shape) -> tuple[int, int] | None:
  """The array's shape without axes of size 1, if it is a matrix of the
  measured sizes; else None."""
  kept = tuple(d for d in shape if d != 1)
  if (len(kept) == 2 and kept[0] >= _ROWS_MIN and
      _ROW_MIN <= kept[1] <= _ROW_MAX):
    return kept
  return None


def _exact_reduction_axes(shape, dtype) -> tuple[int, ...]:
  limit = _F32_EXACT_COUNT if dtype == jnp.float32 else 2**53
  if np.prod(shape) <= limit:  # one reduction: XLA:CPU's fast path
    return tuple(range(len(shape)))
  axes, size = [], 1
  for axis in reversed(range(len(shape))):
    if size * shape[axis] > limit:
      break
    size *= shape[axis]
    axes.append(axis)
  return tuple(axes)


class TopQ(NamedTuple):
  """Where the Q largest scores start, as keys (see `score_keys`)."""
  mask_key: jax.Array  # key >= mask_key selects exactly the scores >= threshold
  num_active: jax.Array  # count(key >= threshold_key), >= Q (ties kept)
  threshold_key: jax.Array  # the Q-th largest key


def _bisect_key(scores: Sequence[jax.Array], q) -> TopQ:
  score_dtype = scores[0].dtype
  key_dtype = _key_dtype(score_dtype)
  nbits = 8 * key_dtype.itemsize - 1  # the sign bit of |x| is always 0
  floor_key, inf_key = _float_key_range(score_dtype)
  countable = _all_leaves_countable_in_float(scores)
  total = sum(t.size for t in scores)
  q = jnp.asarray(q, key_dtype)

  def count(candidate):
    if not countable:
      return _count_exact(scores, candidate)
    return jax.lax.cond((candidate >= floor_key) & (candidate < inf_key),
                        lambda c: _count_float(scores, c),
                        lambda c: _count_exact(scores, c), candidate)

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
  _, prefix, n_prefix = jax.lax.while_loop(undecided, set_next_bit, init)
  # Exactly Q keys reach the prefix: the Q-th largest is the least of them,
  # and the prefix selects the same Q. Stopping there saves the remaining
  # passes (about a third of them on real scores, see
  # benchmarks/search_passes.py); the pass taking the minimum is needed
  # only for the threshold's value, not for the mask.
  key = jax.lax.cond(n_prefix == q, lambda p: _least_at_least(scores, p),
                     lambda p: p, prefix)
  return TopQ(prefix, n_prefix, key)


def _float_key_range(score_dtype) -> tuple[jax.Array, jax.Array]:
  """The keys of the smallest normal number and of +inf: the float counts
  and minima are exact for candidates from the first up to the second.

  Under flush-to-zero a denormal operand reads as 0: a denormal candidate
  would count every score, also the smaller ones. Against a normal candidate
  a denormal score reads as 0 and stays below, as it should.
  """
  key_dtype = _key_dtype(score_dtype)
  tiny_key = np.array(np.finfo(score_dtype).tiny, score_dtype).view(key_dtype)
  inf_key = np.array(np.inf, score_dtype).view(key_dtype)
  return jnp.asarray(tiny_key, key_dtype), jnp.asarray(inf_key, key_dtype)


def _least_at_least(scores: Sequence[jax.Array], key: jax.Array) -> jax.Array:
  """The smallest key ``>= key`` over all arrays (one must exist).

  In float where that is exact, since on XLA:CPU a float minimum took half
  the time of an integer one: against a normal finite key, the least
  finite score at or above its value has the least key, because NaN
  (skipped) and inf lie above every finite key. Otherwise (a denormal key,
  or no finite score reaches it) the keys are compared as integers.
  """
  floor_key, inf_key = _float_key_range(scores[0].dtype)

  def exact(key):
    top = jnp.asarray(jnp.iinfo(key.dtype).max, key.dtype)
    return functools.reduce(jnp.minimum, [
        jnp.min(jnp.where(k >= key, k, top), initial=top)
        for k in score_keys(scores)])

  def in_float(key):
    value = key_to_score(key, scores[0].dtype)
    least = functools.reduce(jnp.minimum, [
        jnp.min(jnp.where(t >= value, t, jnp.inf), initial=jnp.inf)
        for t in scores])
    return jax.lax.cond(jnp.isfinite(least),
                        lambda k: jax.lax.bitcast_convert_type(least, k.dtype),
                        exact, key)

  if not _all_leaves_countable_in_float(scores):
    return exact(key)
  return jax.lax.cond((key >= floor_key) & (key < inf_key), in_float, exact,
                      key)


# The interpolation search: its second candidate assumes that the number of
# scores above x falls like x**-_TAIL_EXPONENT, and later steps outside the
# bracket clip the measured slope to [1/8, 4] times 1/_TAIL_EXPONENT e-folds
# of the score per e-fold of the count. After _INTERPOLATION_PASSES passes
# the search bisects what is left. Tuned with the NumPy re-statement in
# benchmarks/search_passes.py on LeNet-300's real scores and on random
# uniform, log-normal and two-cluster scores.
_TAIL_EXPONENT = 1.5
_INTERPOLATION_PASSES = 16


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
  whatever the scores (see `_at_least_value`). If the answer is below the
  smallest normal number (``lo`` never moved) or not finite (``hi`` never
  moved), the search hands over to `_bisect_key`.
  """
  score_dtype = scores[0].dtype
  key_dtype = _key_dtype(score_dtype)
  info = np.finfo(score_dtype)
  if not _all_leaves_countable_in_float(scores):
    return _bisect_key(scores, q)
  floor_key, inf_key = _float_key_range(score_dtype)
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
    n = _count_float(scores, candidate)
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

  first = _first_candidate(scores, total, guess, floor_key, inf_key)
  init = (jnp.zeros((), jnp.int32), floor_key, jnp.asarray(total, key_dtype),
          inf_key, jnp.zeros((), key_dtype), first,
          jnp.zeros((), jnp.int32), one, one, first,
          jnp.zeros((), key_dtype))
  _, lo, n_lo, hi = jax.lax.while_loop(searching, next_pass, init)[:4]

  def finish(lo, n_lo):
    key = jax.lax.cond(n_lo == q, lambda k: _least_at_least(scores, k),
                       lambda k: k, lo)
    return TopQ(lo, n_lo, key)

  return jax.lax.cond((lo == floor_key) | (hi == inf_key),
                      lambda lo, n_lo: _bisect_key(scores, q),
                      finish, lo, n_lo)


def _first_candidate(scores, total, guess, floor_key, inf_key) -> jax.Array:
  """``guess``'s key if it is a normal finite number, else the mean's key.

  The mean costs a pass over all scores; a guess near the answer (the last
  step's threshold) saves it and, on LeNet-300, a pass or two of the search.
  """
  score_dtype = scores[0].dtype

  def mean_key():
    mean = (sum(jnp.sum(t) for t in scores) / total).astype(score_dtype)
    return jax.lax.bitcast_convert_type(mean, floor_key.dtype)

  if guess is None:
    return mean_key()
  guess_key = jax.lax.bitcast_convert_type(
      jnp.asarray(guess).astype(score_dtype), floor_key.dtype)
  return jax.lax.cond((guess_key >= floor_key) & (guess_key < inf_key),
                      lambda: guess_key, mean_key)


def _all_leaves_countable_in_float(scores) -> bool:
  return all(_exact_reduction_axes(t.shape, t.dtype) for t in scores)


def _top_k_key(scores: Sequence[jax.Array], q) -> TopQ:
  if isinstance(q, jax.core.Tracer):
    raise ValueError(
        "method='top_k' needs a static number of weights to keep (a Python "
        "`ratio`); with a traced ratio (e.g. under optax.inject_hyperparams) "
        "use method='interpolate' or method='bisect'.")
  flat = jnp.concatenate([k.reshape(-1) for k in score_keys(scores)])
  key = jax.lax.top_k(flat, int(q))[0][-1]
  return TopQ(key, _count_exact(scores, key), key)


def select_top_q(scores: Sequence[jax.Array], q, method: str = 'interpolate',
                 guess=None) -> TopQ:
  """`global_threshold` with the key that masks: see `TopQ`.

  ``mask_key`` may lie below the threshold when no score lies between the
  two; comparing keys with it then selects the same scores, and the
  update need not wait for the pass that finds the threshold's value.
  ``guess`` (for ``'interpolate'``; the others ignore it) is where the
  search starts, e.g. the last step's threshold.
  """
  if method not in METHODS:
    raise ValueError(f'`method` must be one of {METHODS}; got {method!r}.')
  scores = list(scores)
  if method == 'top_k':
    return _top_k_key(scores, q)
  if method == 'bisect':
    return _bisect_key(scores, q)
  return _interpolate_key(scores, q, guess)


def global_threshold(scores: Sequence[jax.Array], q,
                     method: str = 'interpolate',
                     guess=None) -> tuple[jax.Array, jax.Array]:
  """The Q-th largest score over all arrays, and how many scores reach it.

  Args:
    scores: non-negative score arrays (e.g. from `taylor_scores`), all of one
      float dtype.
    q: how many to keep, ``1 <= q <= total size``; may be traced for
      ``'interpolate'`` and ``'bisect'``.
    method: ``'interpolate'`` (default), ``'bisect'`` (both sort-free) or
      ``'top_k'``; all give the same result (see the module docstring).
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
