"""Radix select on the CPU with a histogram kernel of our own.

`radix.radix_select` in jax.numpy makes 3 passes, each a scatter-add that
XLA:CPU runs on one core. ``radix_kernel.cc`` counts a pass on every core
(XLA's intra-op thread pool), from the gradients and parameters themselves
where the scores are Taylor scores (they are never written out), and with
bins wide enough for 2 passes on large trees (`digits`): the top 16 key
bits, then the low 15 of the keys in the bucket that holds the Q-th
largest. The digits between the passes are chosen in jax.numpy by the same
code as every radix pass, so the answer is the same key and count.

Under sharding the kernel counts each device's shards, and each pass sums
the counts with one all-reduce over the mesh axes the scores are split
along (`jax.experimental.custom_partitioning`): nothing is gathered.

The kernel is built and loaded by `native_build`. It is used for float32
scores on the CPU; on a GPU the Pallas kernel of `pallas_radix` counts the
passes if asked (``GSM_OPTAX_PALLAS=1``), through the same partitioning;
elsewhere, with ``GSM_OPTAX_NATIVE=0`` or where it cannot be built, the
route is `radix.radix_select`.
"""

import ctypes
import functools
import os
from typing import Optional, Sequence

import jax
from jax.experimental.custom_partitioning import custom_partitioning
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np

from gsm_optax._src import native_build
from gsm_optax._src.selection import pallas_radix
from gsm_optax._src.selection import radix

TARGET = 'gsm_key_histogram'
SOURCE = os.path.join(os.path.dirname(__file__), 'radix_kernel.cc')
# From this many scores on, 2 passes of 2**16 and 2**15 bins; below, the
# bins cost more than a third pass over the scores (docs: performance).
TWO_PASSES_FROM = 2 ** 21


def digits(size: int) -> tuple[int, ...]:
  """The digits' widths the kernel counts ``size`` scores in."""
  return (16, 15) if size >= TWO_PASSES_FROM else radix.DIGITS[31]


@functools.cache
def _library() -> Optional[ctypes.CDLL]:
  """The loaded and registered kernel, or None (with one warning)."""
  return native_build.load(
      SOURCE, {TARGET: 'GsmKeyHistogram'}, 'the native CPU radix kernel',
      "method='radix' counts in jax.numpy instead (same masks, slower)")


def _float32(arrays: Sequence[jax.Array]) -> bool:
  return all(jnp.dtype(a.dtype) == jnp.float32 for a in arrays)


def applies(arrays: Sequence[jax.Array]) -> bool:
  """Whether the kernel counts ``arrays`` on the CPU (float32, and built)."""
  return (native_build.enabled() and _float32(arrays) and
          _library() is not None)


def _ffi_count(prefix, arrays, high, shift, products):
  return jax.ffi.ffi_call(
      TARGET, jax.ShapeDtypeStruct((2 ** (high - shift),), jnp.int32),
      vmap_method='sequential')(prefix, *arrays, high=np.int32(high),
                                shift=np.int32(shift), products=products)


# How a pass counts one device's arrays, per platform.
_COUNTS = {'cpu': _ffi_count, 'cuda': pallas_radix.histogram}


def _split_axes(sharding) -> Optional[tuple]:
  """The mesh axes a `NamedSharding` splits its array along (None if the
  sharding is of another kind)."""
  if not isinstance(sharding, NamedSharding):
    return None
  axes = []
  for entry in sharding.spec:
    if entry is not None:
      axes.extend(entry if isinstance(entry, tuple) else (entry,))
  return tuple(axes)


@functools.lru_cache(maxsize=64)
def _partitioned(high: int, shift: int, ranks: tuple[int, ...],
                 products: bool, platform: str):
  """A kernel's pass (`_COUNTS`) as one op that XLA's partitioner splits per
  device: each device counts its shards (one call per group of arrays split
  along the same mesh axes), then sums the counts over those axes."""
  step = 2 if products else 1
  call = _COUNTS[platform]

  @custom_partitioning
  def histogram(prefix, *arrays):
    return call(prefix, arrays, high, shift, products)

  def replicated(mesh, arg_shapes, result_shape):
    del arg_shapes, result_shape
    return NamedSharding(mesh, PartitionSpec())

  def partition(mesh, arg_shapes, result_shape):
    del result_shape
    shardings = [a.sharding for a in arg_shapes]
    groups = {}
    for first in range(1, len(shardings), step):
      axes = _split_axes(shardings[first])
      if axes is None:  # count it whole, on every device
        shardings[first] = NamedSharding(mesh, PartitionSpec())
        axes = ()
      if products:  # the parameter split like its gradient
        shardings[first + 1] = shardings[first]
      groups.setdefault(axes, []).extend(range(first - 1, first - 1 + step))

    def lower(prefix, *local):
      counts = jnp.zeros(2 ** (high - shift), jnp.int32)
      for axes, members in groups.items():
        part = call(prefix, [local[i] for i in members], high, shift,
                    products)
        counts += jax.lax.psum(part, axes) if axes else part
      return counts

    return mesh, lower, NamedSharding(mesh, PartitionSpec()), tuple(shardings)

  # Every dimension its own factor, none of them the counts'.
  operands = [' '.join(f'a{i}_{d}' for d in range(r))
              for i, r in enumerate(ranks)]
  histogram.def_partition(
      partition=partition, infer_sharding_from_operands=replicated,
      sharding_rule=', '.join(operands) + ' -> z')
  return histogram


def radix_select(scores: Sequence[jax.Array], q,
                 factors: Optional[tuple[Sequence[jax.Array],
                                         Sequence[jax.Array]]] = None):
  """`radix.radix_select` with each pass counted by a kernel: on the CPU
  the FFI kernel (where it `applies`; in passes of `digits`), on a GPU the
  Pallas kernel if ``GSM_OPTAX_PALLAS=1`` (`pallas_radix`); elsewhere, or
  for other dtypes, `radix.radix_select` in jax.numpy.

  ``factors``, optional: ``(gradients, params)`` whose ``|g * w|`` are
  ``scores``; where they are float32 the kernels compute the scores from
  them in each pass instead of reading scores that XLA wrote out.
  """
  scores = list(scores)
  platforms = {}
  if applies(scores):
    platforms['cpu'] = digits(sum(s.size for s in scores))
  if pallas_radix.enabled() and _float32(scores):
    platforms['cuda'] = pallas_radix.DIGITS
  if not platforms:
    return radix.radix_select(scores, q)
  products = factors is not None and _float32(list(factors[0]) +
                                               list(factors[1]))
  arrays = ([a for pair in zip(*factors) for a in pair] if products
            else scores)
  ranks = (0,) + tuple(a.ndim for a in arrays)

  def counted_on(platform):
    def select(q, *arrays):
      def histogram(prefix, high, shift, width):
        del width
        return _partitioned(high, shift, ranks, products, platform)(
            prefix.astype(jnp.int32), *arrays)
      return radix.radix_select(scores, q, platforms[platform], histogram)
    return select

  def portable(q, *arrays):
    del arrays
    return radix.radix_select(scores, q)

  return jax.lax.platform_dependent(
      jnp.asarray(q), *arrays, default=portable,
      **{platform: counted_on(platform) for platform in platforms})
