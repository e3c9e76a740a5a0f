"""Radix select: the Q-th largest key in a fixed number of histogram passes.

The keys (`keys.score_keys`) order non-negative scores as integers; each
pass decides one digit of the answer from the top, so float32 scores need
3 passes and float64 6, whatever the scores (2 for float32 on the CPU, where
`native_radix` counts with a kernel of our own). See `search` for the routes.
"""

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from gsm_optax._src.selection import keys

# The digits: 31 key bits (the sign bit of a non-negative score is 0) in
# 3 passes, 63 in 6.
DIGITS = {31: (11, 10, 10), 63: (11, 11, 11, 10, 10, 10)}

# histogram(prefix, high, shift, width): how many keys k, summed over the
# arrays, have k >> high == prefix, per digit (k >> shift) & (2**width - 1).
Histogram = Callable[[jax.Array, int, int, int], jax.Array]


def scatter_histogram(all_keys: Sequence[jax.Array]) -> Histogram:
  """The `Histogram` of ``all_keys`` in jax.numpy (a scatter-add per array,
  in the array's own shape: a reshape would gather a sharded array).
  Negative keys (never from non-negative scores) match no prefix."""
  def histogram(prefix, high, shift, width):
    hist = jnp.zeros(2 ** width, prefix.dtype)
    for k in all_keys:
      match = (k >> high) == prefix
      digit = jnp.where(match, (k >> shift) & (2 ** width - 1), 2 ** width)
      hist += jnp.zeros(2 ** width + 1, prefix.dtype).at[digit].add(
          1, mode='promise_in_bounds')[:-1]
    return hist
  return histogram


def radix_select(scores: Sequence[jax.Array], q,
                 digits: Optional[Sequence[int]] = None,
                 histogram: Optional[Histogram] = None):
  """The Q-th largest key, one digit per pass from the top.

  A pass histograms the next digit of the keys whose higher digits equal
  the prefix decided so far, summed over the arrays; the digit taken is the
  largest whose bucket, with every key above it, holds at least Q keys.

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
    hist = histogram(prefix, high, shift, width).astype(key_dtype)
    d, num, above = take(hist, above, q)
    prefix = (prefix << width) | d
  return prefix, num, jnp.asarray(len(digits), jnp.int32)


def take(hist: jax.Array, above: jax.Array, q) -> tuple[jax.Array, ...]:
  """The bin that holds the Q-th largest key.

  Args:
    hist: counts of keys per bin, bins in the keys' order.
    above: how many keys lie above the last bin.
    q: the rank, counted from the largest key.

  Returns:
    ``(d, num, above_d)``: the largest bin ``d`` that, with every key
    above it, holds at least Q keys; that count (``num``); and the keys
    above bin ``d`` (``above_d < q <= num``, where the Q-th largest key is
    in the bins at all).
  """
  at_or_above = above + jnp.cumsum(hist[::-1])[::-1]
  d = jnp.sum(at_or_above >= q).astype(hist.dtype) - 1
  return d, at_or_above[d], at_or_above[d] - hist[d]
