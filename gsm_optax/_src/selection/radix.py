"""Radix select: the Q-th largest key in a fixed number of histogram passes.

The keys (`keys.score_keys`) order non-negative scores as integers; each
pass decides one digit of the answer from the top, so float32 scores need
3 passes and float64 6, whatever the scores (fewer for float32 on the CPU,
where `native_radix` counts with a kernel of our own). See `search` for the
routes.
"""

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from gsm_optax._src.selection import keys

# The digits: 31 key bits (the sign bit of a non-negative score is 0) in
# 3 passes, 63 in 6.
DIGITS = {31: (11, 10, 10), 63: (11, 11, 11, 10, 10, 10)}

# histogram(prefix, above, high, shift, width): the keys' rank counts in
# the prefix's range, an array of 2**width + 1: entry d counts the keys k,
# over all arrays, at or above digit d of the range (k >> high == prefix
# with (k >> shift) & (2**width - 1) >= d, or k >> high > prefix), and the
# last one those above the range. ``above``, that last count, is known from
# the last pass (0 at the first); a count that sums per device must count
# it itself instead (a sum over devices would add it once per device).
Histogram = Callable[[jax.Array, jax.Array, int, int, int], jax.Array]


def rank_counts(hist: jax.Array, above: jax.Array) -> jax.Array:
  """Rank counts (see `Histogram`) from the counts per bin ``hist`` and the
  keys ``above`` the last bin."""
  return above + jnp.append(jnp.cumsum(hist[::-1])[::-1],
                            jnp.zeros(1, hist.dtype))


def scatter_histogram(all_keys: Sequence[jax.Array]) -> Histogram:
  """The `Histogram` of ``all_keys`` in jax.numpy (a scatter-add per array,
  in the array's own shape: a reshape would gather a sharded array).
  Negative keys (never from non-negative scores) match no prefix."""
  def histogram(prefix, above, high, shift, width):
    hist = jnp.zeros(2 ** width, prefix.dtype)
    for k in all_keys:
      match = (k >> high) == prefix
      digit = jnp.where(match, (k >> shift) & (2 ** width - 1), 2 ** width)
      hist += jnp.zeros(2 ** width + 1, prefix.dtype).at[digit].add(
          1, mode='promise_in_bounds')[:-1]
    return rank_counts(hist, above)
  return histogram


def radix_select(scores: Sequence[jax.Array], q,
                 digits: Optional[Sequence[int]] = None,
                 histogram: Optional[Histogram] = None):
  """The Q-th largest key, one digit per pass from the top.

  A pass counts the next digit of the keys whose higher digits equal the
  prefix decided so far, summed over the arrays, as rank counts; the digit
  taken is the largest whose rank count reaches Q (`take`).

  Args:
    scores: non-negative score arrays of one float dtype.
    q: how many to keep, ``1 <= q <= total size``; may be traced.
    digits: the digits' widths from the top, summing to the key's bits
      less the sign (default `DIGITS`).
    histogram: how a pass counts (default `scatter_histogram`).

  Returns:
    ``(threshold_key, num_at_least, passes)``: the Q-th largest key, how
    many keys reach it (ties kept), and the passes made.
  """
  key_dtype = keys.key_dtype(scores[0].dtype)
  nbits = 8 * key_dtype.itemsize - 1
  digits = tuple(digits or DIGITS[nbits])
  if sum(digits) != nbits:
    raise ValueError(f'`digits` must sum to {nbits} bits; got {digits}.')
  histogram = histogram or scatter_histogram(keys.score_keys(scores))
  q = jnp.asarray(q, key_dtype)
  prefix = jnp.zeros((), key_dtype)
  above = jnp.zeros((), key_dtype)  # keys above the prefix's range
  shift = nbits
  num = None
  for width in digits:
    high, shift = shift, shift - width
    counts = histogram(prefix, above, high, shift, width).astype(key_dtype)
    d, num, above = take(counts, q)
    prefix = (prefix << width) | d
  return prefix, num, jnp.asarray(len(digits), jnp.int32)


def take(counts: jax.Array, q) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The bin that holds the Q-th largest key.

  Args:
    counts: rank counts of consecutive bins of keys (see `Histogram`): how
      many keys lie at or above each bin, and, last, above every bin.
    q: the rank, counted from the largest key.

  Returns:
    ``(d, num, above_d)``: the largest bin ``d`` whose count reaches Q,
    that count ``num``, and the keys above bin ``d`` (``above_d < q <=
    num``, where the Q-th largest key lies in the bins at all).
  """
  d = jnp.sum(counts[:-1] >= q).astype(counts.dtype) - 1
  return d, counts[d], counts[d + 1]
