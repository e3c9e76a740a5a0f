"""The slim model: the passive groups removed, a smaller dense model.

`slim(fn, params, groups)` cuts every slice of the passive groups out of
the params and returns a function that runs the smaller params: it traces
``fn`` with the full shapes, then evaluates the same jaxpr with every
channel space shrunk (`groups.trace.evaluate`), so the model's own code is
not changed and needs no other widths. The slim outputs equal those of the
full model with the passive groups at zero, up to float rounding (the
sums run over fewer terms, in the same order).
"""

import dataclasses
from typing import Any, Callable, Optional
import warnings

import jax
import numpy as np

from gsm_optax._src import timing
from gsm_optax._src.groups import groups as groups_lib
from gsm_optax._src.groups import trace as trace_lib

# Leaves a passive group may keep non-zero: batch norm's running
# statistics, which a zero scale and shift make irrelevant.
STATISTICS = ('mean', 'var')


@dataclasses.dataclass(frozen=True)
class SlimInfo:
  """What `slim` kept: per family its channels before and after, and the
  model's parameters and FLOPs before and after."""
  channels: tuple[tuple[str, int, int], ...]  # (family, size, kept)
  params: tuple[float, float]
  flops: tuple[float, float]
  # With ``measure``: the dense model's time over the slim one's (jitted,
  # alternated, medians) on the inputs given; else None.
  speedup: Optional[float] = None


class SlimSlowerWarning(UserWarning):
  """The slim model ran slower than the dense one on this device."""


def active_groups(params: Any, groups: groups_lib.Groups,
                  masks: Optional[Any] = None) -> np.ndarray:
  """Which groups are kept: those with an element that ``masks`` keeps
  (e.g. `prune`'s masks), or, without masks, with a non-zero element in
  ``params``."""
  binding = groups.bind(params if masks is None else masks)
  source = jax.tree.leaves(params if masks is None else masks)
  active = np.zeros(groups.num_groups, bool)
  for i, f in enumerate(groups.families):
    any_on = np.zeros(f.size, bool)
    for m in f.members:
      theirs = binding[m.leaf]
      if theirs is None or _is_statistic(groups.paths[m.leaf]):
        continue
      x = np.asarray(source[theirs]) != 0
      per_position = np.moveaxis(x, m.axis, 0).reshape(x.shape[m.axis], -1)
      on = per_position.any(axis=1)
      np.logical_or.at(any_on, m.index[m.index >= 0], on[m.index >= 0])
    active[groups.offsets[i]:groups.offsets[i + 1]] = any_on
  return active


def _is_statistic(path: str) -> bool:
  return any(path.endswith(f"['{name}']") for name in STATISTICS)


def _check_passive_zero(params, groups, active, tolerance):
  """Raises unless every passive group's slices are zero (within
  ``tolerance``), naming the largest and the fix."""
  binding = groups.bind(params)
  leaves = jax.tree.leaves(params)
  worst, where = 0.0, None
  for i, f in enumerate(groups.families):
    passive = ~active[groups.offsets[i]:groups.offsets[i + 1]]
    if not passive.any():
      continue
    for m in f.members:
      theirs = binding[m.leaf]
      if theirs is None or _is_statistic(groups.paths[m.leaf]):
        continue
      positions = np.flatnonzero((m.index >= 0) & passive[np.maximum(
          m.index, 0)])
      if positions.size:
        biggest = float(np.max(np.abs(np.take(np.asarray(leaves[theirs]),
                                              positions, axis=m.axis))))
        if biggest > worst:
          worst, where = biggest, f'{groups.paths[m.leaf]} (axis {m.axis})'
  if worst > tolerance:
    raise ValueError(
        f'slim: the passive groups are not zero: |w| up to {worst:.3g} in '
        f'{where}, so removing them would change the outputs. Zero them first '
        'with `gsm_optax.prune(params, ratio, groups=groups)` (after '
        'structured GSM they have glided near zero, and the prune costs '
        'little), or pass `masks` that keep them, or a `tolerance`.')


def slim(fn: Callable[..., Any], params: Any, groups: groups_lib.Groups,
         masks: Optional[Any] = None, tolerance: float = 0.0,
         measure: Optional[tuple] = None, repeats: int = 20
         ) -> tuple[Any, Callable[..., Any], SlimInfo]:
  """Removes the passive groups: smaller params and the function that runs
  them.

  Args:
    fn: the function the groups were found on, ``fn(params, *args)``.
    params: the params to cut (every leaf the groups were found on, e.g. a
      Flax NNX model's whole state with its batch statistics), with the
      passive groups at zero (as `prune` with ``groups`` leaves them).
    groups: from `find_groups`.
    masks: which groups are kept, as `prune`'s masks (a group is kept if
      any of its elements is); default: the groups with a non-zero element.
    tolerance: the largest ``|w|`` allowed in a removed slice (default 0:
      exactly zero). Batch norm's running statistics (leaves named
      ``mean`` and ``var``) are not checked: a zero scale and shift make
      them irrelevant.
    measure: example arguments of ``fn`` after the params (e.g. ``(x,)``,
      a batch of the size you will serve): the dense and the slim model
      are then jitted and timed on them, alternated, on this device
      (medians of ``repeats`` rounds after one that compiles), the ratio
      goes into ``info.speedup``, and a `SlimSlowerWarning` says when the
      slim model is the slower (fewer FLOPs are not always less time:
      some widths run slower; see ``find_groups(..., round_to=)``).
    repeats: the timed rounds of ``measure``.

  Returns:
    ``(slim_params, slim_fn, info)``: the params with the passive slices
    cut out (the same tree, smaller arrays); ``slim_fn(slim_params, *args)``,
    which can be jitted and exported with `jax.export` (any input shape
    ``fn`` accepts); and a `SlimInfo`.

  Raises:
    ValueError: ``params`` do not match the groups, or a removed slice is
      not zero.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from gsm_optax import find_groups, slim
    >>> params = {'w1': jnp.ones((4, 3)).at[:, 1].set(0.0), 'b1': jnp.zeros(3),
    ...           'w2': jnp.ones((3, 2)).at[1].set(0.0)}
    >>> mlp = lambda p, x: jax.nn.relu(x @ p['w1'] + p['b1']) @ p['w2']
    >>> x = jnp.ones((5, 4))
    >>> small, slim_mlp, info = slim(mlp, params, find_groups(mlp, params, x))
    >>> small['w1'].shape, small['w2'].shape, info.channels[0][1:]
    ((4, 2), (2, 2), (3, 2))
    >>> bool(jnp.allclose(slim_mlp(small, x), mlp(params, x)))
    True
  """
  active = active_groups(params, groups, masks)
  _check_passive_zero(params, groups, active, tolerance)
  leaves, treedef = jax.tree.flatten(params)
  binding = groups.bind(params)
  if None in binding or treedef != groups.treedef:
    raise ValueError(
        'slim needs every leaf the groups were found on (with Flax NNX, the '
        'whole state: `nnx.to_pure_dict(nnx.state(model))`, batch '
        'statistics too), in the same tree.')
  kept = groups.kept_indices(active)
  small = []
  for x, axes in zip(leaves, kept):
    x = np.asarray(x)
    for axis, index in enumerate(axes):
      if index.size != x.shape[axis]:
        x = np.take(x, index, axis=axis)
    small.append(x)
  counts = [int(active[groups.offsets[i]:groups.offsets[i + 1]].sum())
            for i in range(len(groups.families))]
  info = SlimInfo(
      channels=tuple((f.name, f.size, n) for f, n in zip(groups.families,
                                                          counts)),
      params=(groups.totals['params'],
              groups.polynomials['params'].value(np.asarray(counts, float))),
      flops=(groups.totals['flops'],
             groups.polynomials['flops'].value(np.asarray(counts, float))))
  small = jax.tree.unflatten(treedef, small)
  slim_fn = _slim_function(fn, groups, counts)
  if measure is not None:
    info = dataclasses.replace(info, speedup=_speedup(
        fn, params, slim_fn, small, tuple(measure), repeats))
    if info.speedup < 1:
      warnings.warn(
          f'The slim model ran {1 / info.speedup:.2f}x slower than the dense '
          f'one on {jax.devices()[0].device_kind} (it has '
          f'{info.flops[0] / max(info.flops[1], 1):.2f}x fewer FLOPs): some '
          'widths run slower than wider ones on this device. Round the '
          'widths (`find_groups(..., round_to=8)`) or keep the dense model '
          'here.', SlimSlowerWarning, stacklevel=2)
  return small, slim_fn, info


def _speedup(fn, params, slim_fn, slim_params, args, repeats) -> float:
  """The dense model's median time over the slim model's, jitted and
  alternated on ``args`` (`timing.median_seconds`)."""
  dense, small = jax.jit(fn), jax.jit(slim_fn)
  seconds = timing.median_seconds({
      'dense': lambda: dense(params, *args),
      'slim': lambda: small(slim_params, *args)}, repeats)
  return seconds['dense'] / seconds['slim']


def _slim_function(fn, groups, counts):
  """``slim_fn(slim_params, *args)``: traces ``fn`` with the full shapes,
  finds the same families, and evaluates the jaxpr shrunk."""
  stand_ins = jax.tree.unflatten(groups.treedef, [
      jax.ShapeDtypeStruct(s, d) for s, d in zip(groups.shapes,
                                                 groups.dtypes)])
  keys = [f.key for f in groups.families]
  first_index = [f.members[0].index for f in groups.families]

  def slim_fn(slim_params, *args, **kwargs):
    closed, out_tree = trace_lib.trace(fn, stand_ins, args, kwargs)
    analysis = trace_lib.analyze(closed, len(groups.shapes))
    kept = {}
    for (leaf, axis), index, n in zip(keys, first_index, counts):
      layout = analysis.param_layouts[leaf][axis]
      maps = analysis.atoms.index_maps(layout)
      atom = next((a for a, idx in maps.items()
                   if np.array_equal(idx, index)), None)
      if atom is None or analysis.atoms.blocked(atom):
        raise ValueError(
            'slim_fn: traced with these inputs, the function no longer has '
            f'the channel space {groups.paths[leaf]} axis {axis} that the '
            'groups were found on; call slim with groups found on inputs '
            'like these.')
      kept[atom] = n
    values = jax.tree.leaves(slim_params) + jax.tree.leaves((args, kwargs))
    outs = trace_lib.evaluate(analysis, closed, kept, values)
    return jax.tree.unflatten(out_tree, outs)

  return slim_fn


def export_slim(slim_fn: Callable[..., Any], slim_params: Any,
                *example_args: Any, batch_polymorphic: bool = True) -> bytes:
  """A serialized `jax.export` artefact of ``slim_fn`` with the slim params
  inside: it runs without the model's Python code.

  Args:
    slim_fn, slim_params: from `slim`.
    *example_args: inputs of the shapes and dtypes to export for.
    batch_polymorphic: export the first axis of every input as a symbolic
      batch size, so that any batch runs.

  Returns:
    The bytes of ``jax.export.export(...).serialize()``; run them with
    ``jax.export.deserialize(blob).call(*args)``.
  """
  from jax import export  # pylint: disable=import-outside-toplevel
  specs = []
  (batch,) = export.symbolic_shape('batch')
  for x in example_args:
    shape = tuple(np.shape(x))
    if batch_polymorphic and shape:
      shape = (batch,) + shape[1:]
    specs.append(jax.ShapeDtypeStruct(shape, np.asarray(x).dtype
                                      if not hasattr(x, 'dtype') else x.dtype))
  fixed = jax.tree.map(np.asarray, slim_params)
  exported = export.export(jax.jit(lambda *a: slim_fn(fixed, *a)))(*specs)
  return bytes(exported.serialize())
