"""The count of `counting` for XLA:CPU: a matrix's comparison times ones.

Backend-specific, so kept apart: `counting.count_float` sends a matrix here
on the CPU backend (through `jax.lax.platform_dependent`) and everything
else, on every backend, to the portable `counting.count_leaf`. Both are
tested on CPU against NumPy.

XLA:CPU fuses the comparison, the transpose and the vector-matrix product
into one loop over the scores, split over the cores, where the reduction of
`counting.count_leaf` writes the comparison out first
(``python -m benchmarks.speed.search_kernels`` compares the two). Only
matrices take this route, also those with extra axes of size 1 (a 1x1 conv
kernel): merging the axes of a 3x3 conv kernel makes XLA gather a kernel
split over devices along an inner axis (a sharding test checks there is no
gather), and matrices with too few or too long rows were slower this way.
"""

import jax
import jax.numpy as jnp

from gsm_optax._src.selection import keys

# The matrix shapes for which this count beat the reduction when measured
# (docs/performance.md): at least _ROWS_MIN rows of _ROW_MIN to _ROW_MAX.
_ROW_MIN, _ROW_MAX, _ROWS_MIN = 64, 16384, 32


def count_matrix(t: jax.Array, value: jax.Array, dtype) -> jax.Array:
  """count(t >= value) as ``dtype``, for an array `matrix_shape` accepts.

  Each row's count is exact in float32 (a row has at most ``_ROW_MAX``
  scores); the rows add up as integers.
  """
  shape = matrix_shape(t.shape)
  rows = keys.at_least_value(t, value).astype(jnp.float32).reshape(shape)
  per_row = jnp.ones((shape[1],), jnp.float32) @ rows.T
  return jnp.sum(per_row.astype(dtype))


def matrix_shape(shape) -> tuple[int, int] | None:
  """The array's shape without axes of size 1, if it is a matrix of the
  sizes this count is for; else None."""
  kept = tuple(d for d in shape if d != 1)
  if (len(kept) == 2 and kept[0] >= _ROWS_MIN and
      _ROW_MIN <= kept[1] <= _ROW_MAX):
    return kept
  return None
