"""Radix select on the CPU with a histogram kernel of our own.

`radix.radix_select` in jax.numpy makes 3 passes, each a scatter-add that
XLA:CPU runs on one core. ``radix_kernel.cc`` counts a pass on every core
(XLA's intra-op thread pool), from the gradients and parameters themselves
where the scores are Taylor scores (they are never written out).

On large trees (from `SAMPLED_FROM` scores) the route is sampled: the
kernel first counts a sample of about `SAMPLE` scores, spread over every
array, into buckets of their top 16 key bits; the bucket where the sample
puts the Q-th largest score, with `WINDOW` // 2 buckets either side, is a
window of keys that one pass over all scores counts one key a bin, beside
the count of the keys above it. If the Q-th largest key lies in the window
(nearly always: the sample's error is a few buckets) it is read off those
counts: one pass, whose keys are tested in vector registers and mostly
counted nowhere. Else the route makes the two passes of plain radix
select on the same kernel (the top 16 key bits, then the low 15 in the
bucket that holds the answer). The sample changes how many passes are
made, never the answer. Every pass returns rank counts
(`radix.Histogram`), and the digits, and the key in the window, are chosen
in jax.numpy by the same code (`radix.take`), so the answer is the same key
and count.

Below `SAMPLED_FROM`, the digits of `radix.DIGITS` (11, 10, 10 bits), all
in one call of the kernel where no array is split over devices (the passes'
calls, and the choices between them in XLA, cost more than a pass on a
small tree): the second pass lists the low 20 bits of the keys in the
bucket of the first, and the third digit is read off that list, not off a
third pass over the arrays. It chooses each digit as `radix.take` does.

Under sharding the kernel counts each device's shards, and each pass sums
the counts with one all-reduce over the mesh axes the scores are split
along (`jax.experimental.custom_partitioning`): nothing is gathered. The
plain route is then three all-reduces a step, the sampled route two (the
sample's, the window's), four when the window misses.

The kernel is built and loaded by `native_build`. It is used for float32
scores on the CPU; on a GPU the Pallas kernel of `pallas_radix` counts the
passes if asked (``GSM_OPTAX_PALLAS=1``), through the same partitioning;
elsewhere, with ``GSM_OPTAX_NATIVE=0`` or where it cannot be built, the
route is `radix.radix_select`.

Long because the route's three forms (passes, one call, sampled) and the
partitioning that splits each over devices must count and choose digits
alike, and are kept beside one another.
"""

import ctypes
import functools
import os
from typing import NamedTuple, Optional, Sequence

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
SELECT_TARGET = 'gsm_radix_select'
SOURCE = os.path.join(os.path.dirname(__file__), 'radix_kernel.cc')
# From this many scores on, the sampled route; below, the plain passes in
# one call are faster (docs: selection, benchmarks.speed.radix_routes).
SAMPLED_FROM = 3 * 2 ** 21
# The scores the sample counts, about (a sample is at most 1/8 of them).
SAMPLE = 2 ** 17
# The buckets of 2**15 keys the window pass counts one key a bin.
WINDOW = 16
_TOP, _LOW = 16, 15  # the key bits of a bucket, and within one


class Count(NamedTuple):
  """What one pass of the kernel counts, beside its lower end ``lo`` (a
  traced key): ``bins`` bins of ``2**shift`` keys each from ``lo`` on, then
  the keys above them, as rank counts (`radix.Histogram`: entry b the keys
  at or above bin b); with ``stride`` > 0 only a sample, one block of 16
  elements in ``stride``."""
  shift: int
  bins: int
  stride: int = 0


def digits(size: int) -> tuple[int, ...]:
  """The digits' widths of the plain radix passes over ``size`` scores on
  the CPU (the sampled route's fallback from `SAMPLED_FROM` on)."""
  return (_TOP, _LOW) if size >= SAMPLED_FROM else radix.DIGITS[31]


def sample_stride(size: int) -> int:
  """The sample's stride in blocks of 16, for ``size`` scores."""
  return max(8, size // SAMPLE)


@functools.cache
def _library() -> Optional[ctypes.CDLL]:
  """The loaded and registered kernel, or None (with one warning)."""
  return native_build.load(
      SOURCE, {TARGET: 'GsmKeyHistogram', SELECT_TARGET: 'GsmRadixSelect'},
      'the native CPU radix kernel',
      "method='radix' counts in jax.numpy instead (same masks, slower)")


def _float32(arrays: Sequence[jax.Array]) -> bool:
  return all(jnp.dtype(a.dtype) == jnp.float32 for a in arrays)


def applies(arrays: Sequence[jax.Array]) -> bool:
  """Whether the kernel counts ``arrays`` on the CPU (float32, and built)."""
  return (native_build.enabled() and _float32(arrays) and
          _library() is not None)


def _ffi_count(lo, arrays, count: Count, products: bool):
  return jax.ffi.ffi_call(
      TARGET, jax.ShapeDtypeStruct((count.bins + 1,), jnp.int32),
      vmap_method='sequential')(lo, *arrays, shift=np.int32(count.shift),
                                products=products,
                                sample_stride=np.int64(count.stride))


def _ffi_select(q, arrays, products: bool):
  """The whole plain radix select (digits ``radix.DIGITS[31]``) in one
  call of the kernel: ``[key, num_at_least]``, as `radix.radix_select`
  with the kernel's passes gives them (for arrays not split over
  devices)."""
  return jax.ffi.ffi_call(
      SELECT_TARGET, jax.ShapeDtypeStruct((2,), jnp.int32),
      vmap_method='sequential')(q, *arrays, products=products)


def _pallas_count(lo, arrays, count: Count, products: bool):
  """A radix pass (``bins`` a power of two, ``lo`` aligned to their span,
  no sample) by `pallas_radix`: counts per bin, not rank counts, and
  nothing above the bins (`radix.rank_counts` makes rank counts of their
  sum over devices)."""
  high = count.shift + count.bins.bit_length() - 1
  counts = pallas_radix.histogram(lo >> high, arrays, high, count.shift,
                                  products)
  return jnp.append(counts, jnp.zeros(1, jnp.int32))


# How a pass counts one device's arrays, per platform.
_COUNTS = {'cpu': _ffi_count, 'cuda': _pallas_count}


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


def _groups(mesh, arg_shapes, products: bool):
  """The shardings the partitioner is asked for (the first argument a
  replicated scalar, then the arrays), and the arrays' indices (from 0)
  grouped by the mesh axes they are split along (``()``: whole on every
  device; a parameter is split like its gradient)."""
  step = 2 if products else 1
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
  return tuple(shardings), groups


def _summed(groups, local, count: Count, call, lo, products: bool):
  """One pass over each device's shards (``call``), summed over the mesh
  axes that split them: one all-reduce a group of split arrays."""
  counts = jnp.zeros(count.bins + 1, jnp.int32)
  for axes, members in groups.items():
    part = call(lo, [local[i] for i in members], count, products)
    counts += jax.lax.psum(part, axes) if axes else part
  return counts


def _replicated(mesh, arg_shapes, result_shape):
  del arg_shapes, result_shape
  return NamedSharding(mesh, PartitionSpec())


def _rule(ranks: tuple[int, ...]) -> str:
  """The Shardy rule: every dimension its own factor, none the output's."""
  operands = [' '.join(f'a{i}_{d}' for d in range(r))
              for i, r in enumerate(ranks)]
  return ', '.join(operands) + ' -> z'


@functools.lru_cache(maxsize=64)
def _partitioned(count: Count, ranks: tuple[int, ...], products: bool,
                 platform: str):
  """A kernel's pass (`_COUNTS`) as one op that XLA's partitioner splits per
  device: each device counts its shards (one call per group of arrays split
  along the same mesh axes), then sums the counts over those axes."""
  call = _COUNTS[platform]

  @custom_partitioning
  def histogram(lo, *arrays):
    return call(lo, arrays, count, products)

  def partition(mesh, arg_shapes, result_shape):
    del result_shape
    shardings, groups = _groups(mesh, arg_shapes, products)

    def lower(lo, *local):
      return _summed(groups, local, count, call, lo, products)

    return mesh, lower, NamedSharding(mesh, PartitionSpec()), shardings

  histogram.def_partition(
      partition=partition, infer_sharding_from_operands=_replicated,
      sharding_rule=_rule(ranks))
  return histogram


@functools.lru_cache(maxsize=64)
def _partitioned_select(ranks: tuple[int, ...], products: bool):
  """The plain radix select on the CPU as one op, ``[key, num_at_least]``:
  one call of the kernel (`_ffi_select`) where no array is split over
  devices; else the partitioner lowers it to the passes of `radix_select`,
  each counted per device and summed over the mesh axes (`_summed`)."""

  @custom_partitioning
  def select(q, *arrays):
    return _ffi_select(q, arrays, products)

  def partition(mesh, arg_shapes, result_shape):
    del result_shape
    shardings, groups = _groups(mesh, arg_shapes, products)
    if set(groups) == {()}:
      lower = lambda q, *local: _ffi_select(q, local, products)
    else:
      def lower(q, *local):
        def histogram(prefix, above, high, shift, width):
          del above  # the kernel counts the keys above the range itself
          return _summed(groups, local, Count(shift, 2 ** width), _ffi_count,
                         jnp.asarray(prefix << high, jnp.int32), products)
        key, num, _ = radix.radix_select(local[:1], q, radix.DIGITS[31],
                                         histogram)
        return jnp.stack([key, num])
    return mesh, lower, NamedSharding(mesh, PartitionSpec()), shardings

  select.def_partition(
      partition=partition, infer_sharding_from_operands=_replicated,
      sharding_rule=_rule(ranks))
  return select


def radix_select(scores: Sequence[jax.Array], q,
                 factors: Optional[tuple[Sequence[jax.Array],
                                         Sequence[jax.Array]]] = None):
  """`radix.radix_select` with each pass counted by a kernel: on the CPU
  the FFI kernel (where it `applies`; sampled from `SAMPLED_FROM` scores
  on, else in passes of `digits`, in one call where nothing is split over
  devices: `_partitioned_select`), on a GPU the Pallas kernel if
  ``GSM_OPTAX_PALLAS=1`` (`pallas_radix`); elsewhere, or for other dtypes,
  `radix.radix_select` in jax.numpy.

  ``factors``, optional: ``(gradients, params)`` whose ``|g * w|`` are
  ``scores``; where they are float32 the kernels compute the scores from
  them in each pass instead of reading scores that XLA wrote out.
  """
  scores = list(scores)
  size = sum(s.size for s in scores)
  platforms = {}
  if applies(scores):
    platforms['cpu'] = digits(size)
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
      def count(lo, spec):
        return _partitioned(spec, ranks, products, platform)(
            jnp.asarray(lo, jnp.int32), *arrays)

      def histogram(prefix, above, high, shift, width):
        counts = count(prefix << high, Count(shift, 2 ** width))
        if platform == 'cpu':  # the kernel's rank counts, above included
          return counts
        return radix.rank_counts(counts[:-1], above)

      def plain():
        return radix.radix_select(scores, q, platforms[platform], histogram)

      if platform == 'cpu' and size >= SAMPLED_FROM:
        return _sampled_select(q, size, count, plain)
      if platform == 'cpu':  # the passes in one call where nothing is split
        found = _partitioned_select(ranks, products)(q, *arrays)
        return found[0], found[1], jnp.asarray(len(platforms[platform]),
                                               jnp.int32)
      return plain()
    return select

  def portable(q, *arrays):
    del arrays
    return radix.radix_select(scores, q)

  return jax.lax.platform_dependent(
      jnp.asarray(q, jnp.int32), *arrays, default=portable,
      **{platform: counted_on(platform) for platform in platforms})


def _sampled_select(q, size, count, plain):
  """The sampled route (module docstring): ``count(lo, Count)`` counts a
  pass, ``plain()`` is the two-pass radix select the route falls back to.
  Returns ``(key, num_at_least, passes)`` like `radix.radix_select`, the
  passes over all scores (the sample not among them)."""
  sample = count(0, Count(_LOW, 2 ** _TOP, sample_stride(size)))
  # The sample's Q-th largest, scaled to its size; its bucket is the
  # window's middle.
  rank = jnp.maximum(q.astype(jnp.float32) *
                     (sample[0].astype(jnp.float32) / size), 1.0)
  middle = jnp.sum(sample[:-1] >= rank) - 1
  first = jnp.clip(middle - WINDOW // 2, 0, 2 ** _TOP - WINDOW).astype(
      jnp.int32)
  lo = first << _LOW
  window = count(lo, Count(0, WINDOW << _LOW))
  inside = (window[-1] < q) & (window[0] >= q)

  def read_off():
    low, num, _ = radix.take(window, q)
    return lo + low, num, jnp.ones((), jnp.int32)

  def two_more_passes():
    key, num, passes = plain()
    return key, num, passes + 1

  return jax.lax.cond(inside, read_off, two_more_passes)
