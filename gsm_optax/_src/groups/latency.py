"""Measured latency as a structured budget: a table of each matmul's and
convolution's time at a grid of kept widths, measured once on the device
and cached (the latency lookup table of HALP, Shen et al. 2022).

The table is data (`LatencyTable`): `measure_latency` (in
`gsm_optax._src.deploy.latency`) fills it by timing each product of the
model alone, or the whole slim model one family and one pair of families
at a time, and `Groups.with_latency` reads it as one more cost beside
params and FLOPs, so the selection under ``budget='latency'`` is the same
code as under ``'flops'``. Between grid points the time is interpolated
(multilinear); each entry's times (the cross terms of pairs: their joint
time) are first made non-decreasing in every width, the property the
budget fill relies on, by taking at each width the least time measured at
it or at any wider width: a narrow width that runs
slower than a wider one (the convolution cliffs of XLA:CPU) costs what the
wider one does, and the fill, which keeps every channel that adds no cost,
then keeps the wider one. A step of the device's time becomes a plateau
where extra channels are free.
"""

import itertools
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np


class LatencyEntry(NamedTuple):
  """One product's measured time on a grid of its families' widths.

  Attributes:
    name: the product and its parameter, e.g. ``"dot_general ['fc1']
      ['kernel']"`` (for reading; not matched).
    families: indices in ``groups.families`` of the families whose widths
      change the product's operands (at most three).
    grids: per family, the kept widths measured, ascending, the last the
      family's size.
    seconds: the median time at each grid point, a nested list shaped like
      the grid (``len(grids[0]) x len(grids[1]) x ...``; a number when
      ``families`` is empty).
  """
  name: str
  families: tuple
  grids: tuple
  seconds: Any


class LatencyTable(NamedTuple):
  """Measured times of a model's products (see `measure_latency`).

  Attributes:
    device: the device they were measured on (``jax.devices()[0]``'s
      kind), for the reader: a table applies to the device it was
      measured on.
    entries: with ``kind='products'``, one `LatencyEntry` per matmul and
      convolution of the function the groups were found on, in the order
      they run; with ``kind='model'``, the whole model's time (an entry
      with no family), per family what narrowing it alone changes (its
      time minus the whole model's, 0 at full width), and per pair of
      families that meet in a product the cross term: what narrowing both
      changes minus the two changes alone (0 where either is whole).
    kind: ``'products'`` or ``'model'`` (see `measure_latency`).
  """
  device: str
  entries: tuple
  kind: str = 'products'


def grid(low: int, size: int, step: int, points: int) -> tuple:
  """``points`` widths from ``low`` to ``size`` (at multiples of ``step``
  where the family is rounded), ascending, distinct."""
  widths = np.linspace(low, size, points)
  if step > 1:
    widths = np.minimum(np.ceil(widths / step) * step, size)
  return tuple(sorted({int(round(w)) for w in widths} | {low, size}))


def monotone(seconds) -> np.ndarray:
  """The least time at each width or at any wider one, in every width."""
  seconds = np.asarray(seconds, np.float64)
  for axis in range(seconds.ndim):
    seconds = np.flip(np.minimum.accumulate(np.flip(seconds, axis),
                                            axis=axis), axis)
  return seconds


class Latency:
  """A `LatencyTable` as a cost of the groups: ``value(counts)`` sums each
  product's time at the families' channel counts (rows of counts, NumPy
  or jax), interpolated on its grid, the times made non-decreasing in
  every width first (a whole model's cross terms, which may have either
  sign, as `measure_latency` made them: from a non-decreasing joint time)."""

  def __init__(self, table: LatencyTable):
    self.entries = []
    for e in table.entries:
      seconds = np.asarray(e.seconds, np.float64)
      if table.kind != 'model' or len(e.families) < 2:
        seconds = monotone(seconds)  # not a cross term (either sign)
      self.entries.append((tuple(e.families),
                           [np.asarray(g, np.float64) for g in e.grids],
                           seconds))

  def value(self, counts):
    xp = np if isinstance(counts, np.ndarray) else jnp
    counts = xp.asarray(counts)
    squeeze = counts.ndim == 1
    counts = counts[None] if squeeze else counts
    total = xp.zeros(counts.shape[:1], counts.dtype)
    for families, grids, seconds in self.entries:
      if not families:
        total = total + float(seconds)
        continue
      cells, weights = [], []
      for f, g in zip(families, grids):
        c = xp.clip(counts[:, f], g[0], g[-1])
        k = xp.clip(xp.searchsorted(xp.asarray(g, counts.dtype), c,
                                    side='right') - 1, 0, len(g) - 2)
        lo = xp.asarray(g, counts.dtype)[k]
        hi = xp.asarray(g, counts.dtype)[k + 1]
        cells.append(k)
        weights.append((c - lo) / (hi - lo))
      table = xp.asarray(seconds, counts.dtype)
      for corner in itertools.product((0, 1), repeat=len(families)):
        w = 1.0
        for t, bit in zip(weights, corner):
          w = w * (t if bit else 1 - t)
        index = tuple(k + bit for k, bit in zip(cells, corner))
        total = total + w * table[index]
    return float(total[0]) if squeeze and xp is np else (
        total[0] if squeeze else total)
