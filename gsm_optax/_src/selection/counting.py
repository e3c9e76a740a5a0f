"""Counting ``score >= candidate`` over many arrays, exactly, with no gather.

Each count compares the scores as floats with the candidate's value and sums
the 0/1 results in float. Against a normal finite candidate this is exact
for every score: `keys.at_least_value` counts NaN and inf as above and a
denormal (flushed to 0 on XLA:CPU) as below, as their keys order. Partial
sums stay below 2**24 (float32), then add up as integers. The per-array
counts are summed, so with sharded arrays a count is a local reduction plus
an all-reduce of one scalar per array. Other candidates (zero, denormal,
inf) are counted on the integer keys (`count_exact`), made where they are
compared so that no copy of them is written.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gsm_optax._src.selection import counting_cpu
from gsm_optax._src.selection import keys

# Counting in float: partial sums of ones stay exact up to 2**24 in float32.
_F32_EXACT_COUNT = 2**24


def count_exact(scores: Sequence[jax.Array], key: jax.Array) -> jax.Array:
  # The keys are made where they are compared, so that no copy is written.
  return sum(jnp.sum(k >= key, dtype=key.dtype) for k in keys.score_keys(scores))


def count_float(scores: Sequence[jax.Array], key: jax.Array) -> jax.Array:
  """count(key(score) >= key), summed in float: exact for a normal finite
  key whatever the scores, and for leaves that `exact_reduction_axes` can
  count. A matrix on XLA:CPU is counted by `counting_cpu.count_matrix`."""
  value = keys.key_to_score(key, scores[0].dtype)
  return sum(_count_one(t, value, key.dtype) for t in scores)


def _count_one(t: jax.Array, value: jax.Array, dtype) -> jax.Array:
  portable = functools.partial(count_leaf, dtype=dtype)
  if counting_cpu.matrix_shape(t.shape) is None:
    return portable(t, value)
  return jax.lax.platform_dependent(
      t, value, cpu=functools.partial(counting_cpu.count_matrix, dtype=dtype),
      default=portable)


def count_leaf(t: jax.Array, value: jax.Array, dtype) -> jax.Array:
  """count(t >= value) as ``dtype``: a reduction of the 0/1 comparison."""
  # The 0/1 results as bfloat16 (exact), summed in the scores' dtype: XLA:CPU
  # writes them out before reducing, and a narrower array is read faster
  # (benchmarks/speed/search_kernels.py measures it).
  step = keys.at_least_value(t, value).astype(jnp.bfloat16)
  # Reduce trailing axes while each partial count is exactly representable,
  # then add the partial counts as integers.
  axes = exact_reduction_axes(t.shape, t.dtype)
  return jnp.sum(jnp.sum(step, axis=axes, dtype=t.dtype).astype(dtype))


def exact_reduction_axes(shape, dtype) -> tuple[int, ...]:
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


def countable_in_float(scores) -> bool:
  return all(exact_reduction_axes(t.shape, t.dtype) for t in scores)


def least_at_least(scores: Sequence[jax.Array], key: jax.Array) -> jax.Array:
  """The smallest key ``>= key`` over all arrays (one must exist).

  In float where that is exact, since on XLA:CPU a float minimum is faster
  than an integer one: against a normal finite key, the least
  finite score at or above its value has the least key, because NaN
  (skipped) and inf lie above every finite key. Otherwise (a denormal key,
  or no finite score reaches it) the keys are compared as integers.
  """
  floor_key, inf_key = keys.float_key_range(scores[0].dtype)

  def exact(key):
    top = jnp.asarray(jnp.iinfo(key.dtype).max, key.dtype)
    return functools.reduce(jnp.minimum, [
        jnp.min(jnp.where(k >= key, k, top), initial=top)
        for k in keys.score_keys(scores)])

  def in_float(key):
    value = keys.key_to_score(key, scores[0].dtype)
    least = functools.reduce(jnp.minimum, [
        jnp.min(jnp.where(t >= value, t, jnp.inf), initial=jnp.inf)
        for t in scores])
    return jax.lax.cond(jnp.isfinite(least),
                        lambda k: jax.lax.bitcast_convert_type(least, k.dtype),
                        exact, key)

  if not countable_in_float(scores):
    return exact(key)
  return jax.lax.cond((key >= floor_key) & (key < inf_key), in_float, exact,
                      key)
