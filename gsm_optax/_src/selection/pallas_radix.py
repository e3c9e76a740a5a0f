"""A radix pass as a Pallas kernel, for GPUs.

One program counts `BLOCK` keys, `SUB` at a time, into 2**8 bins by summing
a one-hot matrix (no scatter, no atomics, so the counts are exact and the
same in interpret mode), and writes its counts; jax.numpy sums the
programs' counts. The keys are the scores' bit patterns, or are computed in
the kernel from gradient and parameter pairs (``products``), as in
``radix_kernel.cc``: the scores are never written out. A pass counts at most
8 bits (`DIGITS`: 4 passes for float32 keys).

Opt-in (``GSM_OPTAX_PALLAS=1``) for ``method='radix'`` on a GPU: it is
tested in interpret mode on the CPU (``tests/test_pallas_radix.py``) but has
not been compiled for or timed on a GPU yet.
"""

import functools
import os
from typing import Sequence

import jax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton
import jax.numpy as jnp

BLOCK = 8192  # keys per program
SUB = 64  # keys per one-hot matrix (SUB x 2**8)
DIGITS = (8, 8, 8, 7)  # float32 keys, 31 bits


def enabled() -> bool:
  """Whether the GPU radix route uses this kernel (``GSM_OPTAX_PALLAS=1``)."""
  return os.environ.get('GSM_OPTAX_PALLAS', '0') == '1'


def _kernel(prefix_ref, *refs, size, high, shift, products):
  *inputs, out_ref = refs
  bins = out_ref.shape[-1]
  first = pl.program_id(0) * BLOCK
  prefix = prefix_ref[0]

  def count(j, counts):
    chunk = pl.ds(j * SUB, SUB)
    if products:
      s = jnp.abs(inputs[0][chunk] * inputs[1][chunk])
    else:
      s = inputs[0][chunk]
    k = jax.lax.bitcast_convert_type(s, jnp.int32)
    index = first + j * SUB + jnp.arange(SUB)
    match = ((k >> high) == prefix) & (index < size)
    digit = (k >> shift) & (bins - 1)
    onehot = (digit[:, None] == jnp.arange(bins)[None, :]) & match[:, None]
    return counts + jnp.sum(onehot.astype(jnp.int32), axis=0)

  counts = jax.lax.fori_loop(0, BLOCK // SUB, count,
                             jnp.zeros(bins, jnp.int32))
  out_ref[...] = counts[None, :]


@functools.partial(jax.jit, static_argnames=('high', 'shift', 'products',
                                             'interpret'))
def histogram(prefix, arrays: Sequence[jax.Array], high: int, shift: int,
              products: bool, interpret: bool = False) -> jax.Array:
  """Counts per digit ``(key >> shift) & (2**(high - shift) - 1)`` of the
  keys with ``key >> high == prefix``, over ``arrays`` (float32 scores, or
  gradient and parameter pairs, flattened), summed: one pass's counts per
  bin, of which `radix.rank_counts` makes a `radix.Histogram`'s answer.

  Args:
    prefix: the digits decided so far (an int32 scalar).
    arrays: float32 scores, or with ``products`` the gradients and params
      in turn.
    high, shift: the pass's bits, ``high - shift <= 8``.
    products: whether ``arrays`` are pairs whose ``|g * w|`` are scored.
    interpret: run the kernel in Pallas's interpreter (CPU tests).

  Returns:
    The counts, int32 of shape ``(2**(high - shift),)``.
  """
  bins = 2 ** (high - shift)
  if bins > 2 ** 8:
    raise ValueError(f'a Pallas pass counts at most 8 bits; got '
                     f'{high - shift}.')
  step = 2 if products else 1
  prefix = jnp.asarray(prefix, jnp.int32).reshape(1)
  total = jnp.zeros(bins, jnp.int32)
  for i in range(0, len(arrays), step):
    flat = [a.reshape(-1) for a in arrays[i:i + step]]
    size = flat[0].size
    if not size:
      continue
    programs = pl.cdiv(size, BLOCK)
    counts = pl.pallas_call(
        functools.partial(_kernel, size=size, high=high, shift=shift,
                          products=products),
        out_shape=jax.ShapeDtypeStruct((programs, bins), jnp.int32),
        grid=(programs,),
        in_specs=[pl.BlockSpec((1,), lambda p: (0,))] +
        [pl.BlockSpec((BLOCK,), lambda p: (p,))] * step,
        out_specs=pl.BlockSpec((1, bins), lambda p: (p, 0)),
        compiler_params=pl_triton.CompilerParams(num_warps=4, num_stages=1),
        interpret=interpret,
    )(prefix, *flat)
    total += jnp.sum(counts, axis=0)
  return total
