"""Radix select: the Q-th largest key in a fixed number of histogram passes.

The keys (`keys.score_keys`) order non-negative scores as integers; each
pass decides one digit of the answer from the top, so float32 scores need
3 passes and float64 6, whatever the scores. See `search` for the routes.
"""

from typing import Sequence

import jax
import jax.numpy as jnp

from gsm_optax._src.selection import keys

# The digits: 31 key bits (the sign bit of a non-negative score is 0) in
# 3 passes, 63 in 6.
_RADIX_DIGITS = {31: (11, 10, 10), 63: (11, 11, 11, 10, 10, 10)}


def radix_select(scores: Sequence[jax.Array], q):
  """The Q-th largest key, one digit per pass from the top (`_RADIX_DIGITS`).

  A pass histograms the next digit of the keys whose higher digits equal
  the prefix decided so far, summed over the arrays; the digit taken is the
  largest whose bucket, with every key above it, holds at least Q keys.
  Negative keys (never from non-negative scores) match no prefix.

  Returns:
    ``(threshold_key, num_at_least, passes)``: the Q-th largest key, how
    many keys reach it (ties kept), and the passes made.
  """
  key_dtype = keys.key_dtype(scores[0].dtype)
  nbits = 8 * key_dtype.itemsize - 1
  all_keys = keys.score_keys(scores)
  q = jnp.asarray(q, key_dtype)
  prefix = jnp.zeros((), key_dtype)
  above = jnp.zeros((), key_dtype)  # keys above the prefix's range
  shift = nbits
  at_or_above = None
  for width in _RADIX_DIGITS[nbits]:
    high, shift = shift, shift - width
    hist = jnp.zeros(2 ** width, key_dtype)
    for k in all_keys:
      k = k.reshape(-1)
      match = (k >> high) == prefix
      digit = jnp.where(match, (k >> shift) & (2 ** width - 1), 2 ** width)
      hist += jnp.zeros(2 ** width + 1, key_dtype).at[digit].add(
          1, mode='promise_in_bounds')[:-1]
    # at_or_above[d]: keys above the bucket range plus those in buckets >= d.
    at_or_above = above + jnp.cumsum(hist[::-1])[::-1]
    d = jnp.sum(at_or_above >= q).astype(key_dtype) - 1
    above = at_or_above[d] - hist[d]
    prefix = (prefix << width) | d
  return (prefix, at_or_above[d],
          jnp.asarray(len(_RADIX_DIGITS[nbits]), jnp.int32))
