"""Scores and their bit-pattern keys: the order every selection route uses.

For non-negative IEEE floats the bit pattern, read as a signed integer of the
same width (a "key"), orders exactly like the value, with NaN above +inf.
Every route compares keys (or, where that is provably the same, floats), so
all of them agree on NaN, inf, denormals and ties.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


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
  dtype = score_dtype(list(updates) + list(params))
  return [jnp.abs(g.astype(dtype) * w.astype(dtype))
          for g, w in zip(updates, params)]


def magnitude_scores(params: Sequence[jax.Array]) -> list[jax.Array]:
  """Magnitudes ``|w|`` in the scores' dtype (float32, or float64 if any)."""
  dtype = score_dtype(params)
  return [jnp.abs(w.astype(dtype)) for w in params]


def score_dtype(arrays: Sequence[jax.Array]) -> jnp.dtype:
  if any(jnp.dtype(a.dtype) == jnp.float64 for a in arrays):
    return jnp.dtype(jnp.float64)
  return jnp.dtype(jnp.float32)


def key_dtype(score_dtype) -> jnp.dtype:
  return jnp.dtype(jnp.int64 if score_dtype == jnp.float64 else jnp.int32)


def score_keys(scores: Sequence[jax.Array]) -> list[jax.Array]:
  """Bit patterns of non-negative scores, as signed integers of equal width.

  The sign bit of ``|x|`` is 0 (also for NaN), so keys are non-negative and
  order like the scores; NaN ranks above +inf.
  """
  return [jax.lax.bitcast_convert_type(t, key_dtype(t.dtype)) for t in scores]


def at_least(scores: Sequence[jax.Array], key: jax.Array) -> list[jax.Array]:
  """Masks ``score >= threshold`` per array, compared as keys (NaN > inf)."""
  return [k >= key for k in score_keys(scores)]


def key_to_score(key: jax.Array, score_dtype) -> jax.Array:
  """Inverse of `score_keys` for one key."""
  return jax.lax.bitcast_convert_type(key, jnp.dtype(score_dtype))


def at_least_value(t: jax.Array, value: jax.Array) -> jax.Array:
  """``key(t) >= key(value)`` for a normal, finite ``value``, in float.

  Written as ``not (t < value)`` so that a NaN score, whose key is above
  every other, counts as above, like +inf; a denormal score, read as 0
  under flush-to-zero, stays below. So the float count is exact for any
  scores, finite or not, against a normal finite candidate.
  """
  return jnp.logical_not(t < value)


def float_key_range(score_dtype) -> tuple[jax.Array, jax.Array]:
  """The keys of the smallest normal number and of +inf: the float counts
  and minima are exact for candidates from the first up to the second.

  Under flush-to-zero a denormal operand reads as 0: a denormal candidate
  would count every score, also the smaller ones. Against a normal candidate
  a denormal score reads as 0 and stays below, as it should.
  """
  int_dtype = key_dtype(score_dtype)
  tiny_key = np.array(np.finfo(score_dtype).tiny, score_dtype).view(int_dtype)
  inf_key = np.array(np.inf, score_dtype).view(int_dtype)
  return jnp.asarray(tiny_key, int_dtype), jnp.asarray(inf_key, int_dtype)
