"""`measure_latency`: the latency table of `gsm_optax._src.groups.latency`
measured on this device, by timing each matmul and convolution alone or
the whole slim model (`slim`), one family and one pair of families at a
time."""

import itertools
import json
import os
import tempfile
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gsm_optax._src import timing
from gsm_optax._src.deploy import slim as slim_lib
from gsm_optax._src.groups import latency as latency_lib
from gsm_optax._src.groups.latency import LatencyEntry
from gsm_optax._src.groups.latency import LatencyTable


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
  (the others whole) and, for each pair of families that meet in a
  product (a layer's inputs and outputs), on the grid of both, every
  variant alternated with the others round by round (`median_seconds`); a
  kept model's time is then the whole model's, plus what each family's
  width changes, plus each pair's cross term (what narrowing both changes
  beyond the two alone: a layer whose inputs and outputs both narrow
  saves less than the two changes summed). Exact at grid points for a
  model whose time is a sum of terms of one or two families each, as a
  chain of layers is. This prices everything the model runs, fused as the
  compiler fuses it; measured on the example input's batch. It times
  ``1 + F (points - 1) + P (points - 1)**2`` models for F families and P
  pairs.

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
  """`measure_latency`'s whole-model entries: the full model; per family,
  its time at each grid width minus the full model's; per pair of
  families that meet in a product, what narrowing both changes beyond the
  two alone (the cross term), from the model timed on their grid."""
  grids = {f: groups.latency_grid(f, points)
           for f in range(len(groups.families))}
  grids = {f: g for f, g in grids.items() if len(g) >= 2}
  pairs = sorted({pair for families, _, _ in groups.product_operands()
                  for pair in itertools.combinations(sorted(families), 2)
                  if pair[0] in grids and pair[1] in grids})

  def slim_call(widths):
    active = np.ones(groups.num_groups, bool)
    for f, width in widths:
      active[groups.offsets[f] + width:groups.offsets[f + 1]] = False
    small, small_fn, _ = slim_lib.slim(fn, groups.zeroed(active, params),
                                       groups)
    return jax.jit(small_fn), small

  calls = {(): (jax.jit(fn), params)}
  for f, grid in grids.items():
    for width in grid[:-1]:
      calls[((f, width),)] = slim_call(((f, width),))
  for a, b in pairs:
    for wa in grids[a][:-1]:
      for wb in grids[b][:-1]:
        calls[((a, wa), (b, wb))] = slim_call(((a, wa), (b, wb)))
  seconds = timing.median_seconds(
      {k: (lambda c=c, p=p: c(p, *args)) for k, (c, p) in calls.items()},
      repeats)
  full = seconds[()]
  change = lambda *widths: seconds[tuple(  # a whole family: not in the key
      (f, w) for f, w in widths if w != grids[f][-1])] - full
  entries = [LatencyEntry('the whole model', (), (), full)]
  singles = {}
  for f, grid in grids.items():
    singles[f] = latency_lib.monotone([change((f, w)) for w in grid])
    entries.append(LatencyEntry(f'the model, {groups.families[f].name} '
                                'narrowed', (f,), (grid,),
                                singles[f].tolist()))
  for a, b in pairs:
    both = latency_lib.monotone([[change((a, wa), (b, wb))
                                  for wb in grids[b]] for wa in grids[a]])
    cross = both - singles[a][:, None] - singles[b][None, :]
    entries.append(LatencyEntry(
        f'the model, {groups.families[a].name} and '
        f'{groups.families[b].name} narrowed together', (a, b),
        (grids[a], grids[b]), cross.tolist()))
  return tuple(entries)
