"""Measured latency as a structured budget: a table of each matmul's and
convolution's time at a grid of kept widths, measured once on the device
and cached (the latency lookup table of HALP, Shen et al. 2022).

The table is data (`LatencyTable`): `measure_latency` fills it by timing
each product of the model alone, or the whole slim model one family at a
time, and `Groups.with_latency` reads it as one more cost beside params
and FLOPs, so the selection under ``budget='latency'`` is the same code as
under ``'flops'``. Between grid points the time is interpolated
(multilinear); each entry's times are first made non-decreasing in every
width, the property the budget fill relies on, by taking at each width the
least time measured at it or at any wider width: a narrow width that runs
slower than a wider one (the convolution cliffs of XLA:CPU) costs what the
wider one does, and the fill, which keeps every channel that adds no cost,
then keeps the wider one. A step of the device's time becomes a plateau
where extra channels are free.
"""

import itertools
import json
import os
import tempfile
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gsm_optax._src import timing


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
      with no family) and, per family, what narrowing it alone changes
      (its time minus the whole model's, 0 at full width).
    kind: ``'products'`` or ``'model'`` (see `measure_latency`).
  """
  device: str
  entries: tuple
  kind: str = 'products'


def _signature(eqn, shapes, dtypes, device) -> str:
  params = {k: str(v) for k, v in sorted(eqn.params.items())}
  return json.dumps([device, str(eqn.primitive), params,
                     [list(s) for s in shapes], [str(d) for d in dtypes]])


def _bind(eqn, shapes):
  """The product alone, jitted, on operands of ``shapes``."""
  params = dict(eqn.params)
  if 'feature_group_count' in params and params['feature_group_count'] > 1:
    # depthwise: one group per input channel, which shrinks with it.
    spec = params['dimension_numbers'].lhs_spec
    params['feature_group_count'] = shapes[0][spec[1]]
  return jax.jit(lambda *xs: eqn.primitive.bind(*xs, **params))


def grid(low: int, size: int, step: int, points: int) -> tuple:
  """``points`` widths from ``low`` to ``size`` (at multiples of ``step``
  where the family is rounded), ascending, distinct."""
  widths = np.linspace(low, size, points)
  if step > 1:
    widths = np.minimum(np.ceil(widths / step) * step, size)
  return tuple(sorted({int(round(w)) for w in widths} | {low, size}))


def _read_cache(path):
  if path is None or not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _write_cache(path, cache):
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, suffix='.tmp')
  with os.fdopen(fd, 'w') as f:
    json.dump(cache, f)
  os.replace(tmp, path)


def measure_latency(groups: Any, points: int = 5, repeats: int = 10,
                    cache: Optional[str] = None,
                    model: Optional[tuple] = None) -> LatencyTable:
  """Times the groups' function at a grid of kept widths, on the default
  device: each matmul and convolution alone, or (``model``) the whole
  slim model.

  With ``model=(fn, params, *example_args)``, the slim model itself
  (`slim`) is timed, jitted, at ``points`` widths of one family at a time
  (the others whole), every variant alternated with the others round by
  round (`median_seconds`); a kept model's time is then the whole model's
  plus what each family's width changes, summed (an additive model:
  no cross terms). This prices everything the model runs, fused as the
  compiler fuses it; measured on the example input's batch.

  Without ``model``, each product runs alone (jitted, on operands of the
  kept shapes), the median of ``repeats`` calls after one to compile: no
  function to call, but a product alone may run at another speed than
  inside the model (another algorithm, no fusion). A product whose
  operands depend on one family is timed at ``points`` widths of it, on
  two at ``points x points``, on three at fewer each (at most
  ``points ** 2`` in all); widths are multiples of the groups'
  ``round_to``. Products alike (same primitive, parameters, shapes and
  device) are timed once; with ``cache`` every time is kept in that JSON
  file and read back on the next call, so a table is measured once per
  device. Elementwise operations, norms and softmax are not timed: the
  table prices the products, where the time of a model's layers goes.

  Args:
    groups: a `Groups` (from `find_groups`) on the model to prune.
    points: widths a family is timed at (>= 2).
    repeats: timed calls per grid point (the median is kept).
    cache: a JSON file of measured times to read and extend, or None
      (products only: a whole model's times are not cached).
    model: ``(fn, params, *example_args)``, the function and the params
      the groups were found on, to time the whole slim model.

  Returns:
    A `LatencyTable`; pass it to ``groups.with_latency`` to prune under
    ``budget='latency'``.

  References:
    Shen, Yin, Molchanov, Mao, Liu, Alvarez. Structural Pruning via
    Latency-Saliency Knapsack. NeurIPS 2022.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from gsm_optax import find_groups, measure_latency
    >>> params = {'w1': jnp.ones((16, 32)), 'w2': jnp.ones((32, 4))}
    >>> mlp = lambda p, x: jax.nn.relu(x @ p['w1']) @ p['w2']
    >>> groups = find_groups(mlp, params, jnp.ones((8, 16)))
    >>> table = measure_latency(groups, points=3, repeats=2)
    >>> [(e.name, e.grids) for e in table.entries]
    [("dot_general ['w1']", ((1, 16, 32),)), ("dot_general ['w2']", ((1, 16, 32),))]
    >>> pruned = groups.with_latency(table)
    >>> sorted(pruned.totals)
    ['flops', 'latency', 'params']
  """
  if not isinstance(points, (int, np.integer)) or points < 2:
    raise ValueError(f'`points`={points!r} must be an int >= 2 (the widths '
                     'each family is timed at, e.g. 5).')
  if not isinstance(repeats, (int, np.integer)) or repeats < 1:
    raise ValueError(f'`repeats`={repeats!r} must be an int >= 1, e.g. 10.')
  device = jax.devices()[0].device_kind
  if model is not None:
    return LatencyTable(device, _model_entries(groups, points, repeats,
                                               *model), 'model')
  stored = _read_cache(cache)
  measured = dict(stored)
  entries = []
  for families, (eqn, ins), leaf in groups.product_operands():
    if len(families) > 3:
      raise ValueError(
          f'a product depends on {len(families)} families; measure_latency '
          'times at most three per product. Use budget="flops" for this '
          'model.')
    each = points if len(families) <= 2 else max(
        2, int(round(points ** (2 / 3))))
    grids = tuple(groups.latency_grid(f, each) for f in families)
    dtypes = [v.aval.dtype for v in eqn.invars]
    seconds = np.zeros([len(g) for g in grids])
    for point in itertools.product(*[range(len(g)) for g in grids]):
      widths = {f: g[k] for f, g, k in zip(families, grids, point)}
      shapes = groups.operand_shapes(ins, widths)
      key = _signature(eqn, shapes, dtypes, device)
      if key not in measured:
        call = _bind(eqn, shapes)
        args = [jnp.ones(s, d) for s, d in zip(shapes, dtypes)]
        measured[key] = timing.median_seconds(
            {'op': lambda c=call, a=args: c(*a)}, repeats)['op']
      seconds[point] = measured[key]
    where = '' if leaf is None else ' ' + groups.paths[leaf]
    entries.append(LatencyEntry(f'{eqn.primitive}{where}', tuple(families),
                                grids, seconds.tolist()))
  if cache is not None and measured != stored:
    _write_cache(cache, measured)
  return LatencyTable(device, tuple(entries))


def _model_entries(groups, points, repeats, fn, params, *args) -> tuple:
  """`measure_latency`'s whole-model entries: the full model, then per
  family its time at each grid width minus the full model's."""
  from gsm_optax._src.deploy import slim as slim_lib  # pylint: disable=import-outside-toplevel
  leaves, treedef = jax.tree.flatten(params)
  calls, grids = {'full': (jax.jit(fn), params)}, {}
  for f, family in enumerate(groups.families):
    grids[f] = groups.latency_grid(f, points)
    if len(grids[f]) < 2:
      continue
    for width in grids[f][:-1]:
      active = np.ones(groups.num_groups, bool)
      active[groups.offsets[f] + width:groups.offsets[f + 1]] = False
      masks = groups.expand(jnp.asarray(active), params)
      masked = jax.tree.unflatten(treedef, [
          jnp.where(masks[i], x, 0) if i in masks else x
          for i, x in enumerate(leaves)])
      small, small_fn, _ = slim_lib.slim(fn, masked, groups)
      calls[(f, width)] = (jax.jit(small_fn), small)
  seconds = timing.median_seconds(
      {k: (lambda c=c, p=p: c(p, *args)) for k, (c, p) in calls.items()},
      repeats)
  full = seconds['full']
  entries = [LatencyEntry('the whole model', (), (), full)]
  for f, grid in grids.items():
    if len(grid) < 2:
      continue
    changes = [seconds[(f, w)] - full for w in grid[:-1]] + [0.0]
    entries.append(LatencyEntry(f'the model, {groups.families[f].name} '
                                'narrowed', (f,), (grid,), changes))
  return tuple(entries)


class Latency:
  """A `LatencyTable` as a cost of the groups: ``value(counts)`` sums each
  product's time at the families' channel counts (rows of counts, NumPy
  or jax), interpolated on its grid, the times made non-decreasing in
  every width first."""

  def __init__(self, table: LatencyTable):
    self.entries = []
    for e in table.entries:
      seconds = np.asarray(e.seconds, np.float64)
      for axis in range(seconds.ndim):  # the least at this or a wider width
        seconds = np.flip(np.minimum.accumulate(np.flip(seconds, axis),
                                                axis=axis), axis)
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
