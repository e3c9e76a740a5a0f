"""Exact global selection of the Q-th largest score across many arrays.

Two routes give the *identical* threshold:

* ``'bisect'`` (default): a search of at most 31 passes (63 for float64)
  on the bit pattern of the scores. For non-negative IEEE floats the bit
  pattern, read as an integer "key", orders exactly like the value, with NaN
  above +inf. Bit by bit from the top, the search keeps the largest key ``c``
  with ``count(key >= c) >= Q``, which is the Q-th largest key. Once exactly
  Q keys reach the prefix, the least of them is that key: one pass taking a
  minimum replaces the remaining passes. Each pass counts per leaf and adds
  the counts up, so no concatenated copy of the scores is built; Q may be
  traced; and when the arrays are sharded, each pass is a local count plus
  an all-reduce of one scalar, never a gather.
* ``'top_k'``: ``jax.lax.top_k`` on the concatenated keys. Needs a static Q and
  gathers every score; kept as the reference and for small models.

Each count compares the scores as floats against the candidate's value and
sums the 0/1 results in float. On XLA:CPU (jax 0.10.2, LeNet-300's scores)
this ran the search 1.9x faster than the float step-function kernel used
before, and faster than summing integer comparisons of the keys; stopping
early gained another 1.14x (`benchmarks.step_overhead` times whole steps). A
float comparison orders like the keys for finite scores against a normal
candidate, also under XLA:CPU's flush-to-zero (a denormal score reads as 0,
still below). Otherwise (inf or NaN among the scores, or a denormal
candidate), exact integer comparisons of the keys are used.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

METHODS = ('bisect', 'top_k')
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


def _count_exact(keys: Sequence[jax.Array], key: jax.Array) -> jax.Array:
  return sum(jnp.sum(k >= key, dtype=key.dtype) for k in keys)


def _count_float(scores: Sequence[jax.Array], key: jax.Array) -> jax.Array:
  """count(score >= value(key)), summed in float, exact for guarded inputs."""
  value = key_to_score(key, scores[0].dtype)
  total = jnp.zeros((), key.dtype)
  for t in scores:
    step = (t >= value).astype(t.dtype)
    # Reduce trailing axes while each partial count is exactly representable,
    # then add the partial counts as integers.
    axes = _exact_reduction_axes(t.shape, t.dtype)
    total += jnp.sum(jnp.sum(step, axis=axes).astype(key.dtype))
  return total


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


def _float_kernel_floor(score_dtype) -> int:
  """Smallest key for which the float count is exact: the smallest normal.

  Under flush-to-zero a denormal operand reads as 0: a denormal candidate
  would count every score, also the smaller ones. Against a normal candidate
  a denormal score reads as 0 and stays below, as it should.
  """
  tiny = np.finfo(score_dtype).tiny
  return int(np.array(tiny, score_dtype).view(_key_dtype(score_dtype)))


def _bisect_key(scores: Sequence[jax.Array], keys: Sequence[jax.Array],
                q) -> tuple[jax.Array, jax.Array]:
  key_dtype = keys[0].dtype
  nbits = 8 * key_dtype.itemsize - 1  # the sign bit of |x| is always 0
  score_dtype = scores[0].dtype
  # Any inf or NaN turns the sum of t * 0 into NaN: one fast reduction.
  all_finite = jnp.isfinite(sum(jnp.sum(t * 0) for t in scores))
  can_use_float = all_finite & _all_leaves_countable_in_float(scores)
  floor_key = jnp.asarray(_float_kernel_floor(score_dtype), key_dtype)
  total = sum(k.size for k in keys)
  q = jnp.asarray(q, key_dtype)

  def count(candidate):
    return jax.lax.cond(can_use_float & (candidate >= floor_key),
                        lambda c: _count_float(scores, c),
                        lambda c: _count_exact(keys, c), candidate)

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
  # Exactly Q keys reach the prefix: the Q-th largest is the least of them.
  # Stopping there trades the remaining passes (about a third of them on
  # real scores, see benchmarks/search_passes.py) for one taking a minimum.
  key = jax.lax.cond(n_prefix == q, lambda p: _least_at_least(keys, p),
                     lambda p: p, prefix)
  return key, n_prefix


def _least_at_least(keys: Sequence[jax.Array], key: jax.Array) -> jax.Array:
  """The smallest key ``>= key`` over all arrays (one must exist)."""
  top = jnp.asarray(jnp.iinfo(key.dtype).max, key.dtype)
  return functools.reduce(jnp.minimum, [
      jnp.min(jnp.where(k >= key, k, top), initial=top) for k in keys])


def _all_leaves_countable_in_float(scores) -> bool:
  return all(_exact_reduction_axes(t.shape, t.dtype) for t in scores)


def _top_k_key(keys: Sequence[jax.Array], q) -> tuple[jax.Array, jax.Array]:
  if isinstance(q, jax.core.Tracer):
    raise ValueError(
        "method='top_k' needs a static number of weights to keep (a Python "
        "`ratio`); with a traced ratio (e.g. under optax.inject_hyperparams) "
        "use method='bisect'.")
  flat = jnp.concatenate([k.reshape(-1) for k in keys])
  key = jax.lax.top_k(flat, int(q))[0][-1]
  return key, _count_exact(keys, key)


def global_threshold(scores: Sequence[jax.Array], q,
                     method: str = 'bisect') -> tuple[jax.Array, jax.Array]:
  """The Q-th largest score over all arrays, and how many scores reach it.

  Args:
    scores: non-negative score arrays (e.g. from `taylor_scores`), all of one
      float dtype.
    q: how many to keep, ``1 <= q <= total size``; may be traced for
      ``'bisect'``.
    method: ``'bisect'`` (sort-free, default) or ``'top_k'``; both give the
      same result.

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
  if method not in METHODS:
    raise ValueError(f'`method` must be one of {METHODS}; got {method!r}.')
  scores = list(scores)
  keys = score_keys(scores)
  if method == 'top_k':
    return _top_k_key(keys, q)
  return _bisect_key(scores, keys, q)
