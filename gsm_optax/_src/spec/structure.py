"""What unit is ranked, as one value that the transforms and the prune read.

A *structure* answers, for a params tree: which leaves are scored, how the
units (single weights, or groups of coupled channels) are scored, which of
them a budget keeps, and what that means for every element. Three exist:

* `PerWeight` (the default): every weight of the prunable leaves is a unit;
  the budget keeps ``Q = floor(N / ratio)`` of them, by the exact sort-free
  search (`global_threshold`), ties kept.
* `NByM` (``pattern=`` an `NM`): every weight is a unit; each block of M
  consecutive weights along a kernel's input axis keeps its N best.
* `gsm_optax.Groups` (from `find_groups`): a unit is a channel with every
  slice coupled to it; the budget is a ratio of parameters or FLOPs.

All have the same four methods, so `keep_top_taylor`, `gsm`,
`global_sparse`, `prune`, `pruned_norm_share` and `check_final_prune` are
written once.
"""

from typing import Any, NamedTuple, Optional, Protocol

import jax
import jax.numpy as jnp

from gsm_optax._src.selection import keys
from gsm_optax._src.selection import search
from gsm_optax._src.spec import pattern as pattern_lib
from gsm_optax._src.spec import prunable as prunable_lib
from gsm_optax._src.spec import ratio as ratio_lib


class Chosen(NamedTuple):
  """A selection: the active units (one bool array per unit key, see
  ``unit_keys``), the threshold (the score at the budget), how many units
  are active, and one element mask per scored leaf (by leaf index)."""
  units: dict
  threshold: jax.Array
  num_active: jax.Array
  masks: dict


class Structure(Protocol):
  """The interface of `PerWeight`, `NByM` and `Groups` (see the module
  docstring)."""

  def scored_leaves(self, params: Any) -> list[int]:
    """Indices (in ``jax.tree.leaves(params)``) of the leaves whose updates
    are scored and masked."""

  def unit_keys(self, params: Any) -> list:
    """The keys of the unit arrays, in the order the state keeps them."""

  def unit_shapes(self, params: Any) -> list[tuple]:
    """The shape of each unit array (the state keeps one bool per unit)."""

  def check(self, params: Any, ratio: Any) -> None:
    """Raises a clear error if ``params`` or a concrete ``ratio`` do not
    fit."""

  def choose(self, values: dict, params: Any, ratio: Any,
             kind: str, guess: Optional[jax.Array] = None,
             q: Optional[int] = None) -> Chosen:
    """Scores the units from ``values`` (leaf index -> the update, or the
    smoothed gradient, of that leaf; ``kind='magnitude'``: ignored, the
    weights are scored) and keeps those the budget allows (per weight:
    ``q`` of them if given)."""


class PerWeight:
  """Every weight of the prunable leaves is a unit (GSM as in the paper).

  Args:
    prunable: which leaves are ranked (see `keep_top_taylor`).
    method: the selection route (see `global_threshold`).
  """

  def __init__(self, prunable: prunable_lib.PrunableSpec = None,
               method: str = 'auto'):
    if method not in search.METHODS:
      raise ValueError(f'`method` must be one of {search.METHODS}; '
                       f'got {method!r}.')
    self.prunable = prunable
    self.method = method

  def scored_leaves(self, params):
    flags = prunable_lib.resolve_prunable(params, self.prunable)
    return [i for i, f in enumerate(flags) if f]

  def unit_keys(self, params):
    return self.scored_leaves(params)

  def unit_shapes(self, params):
    leaves = jax.tree.leaves(params)
    return [jnp.shape(leaves[i]) for i in self.scored_leaves(params)]

  def check(self, params, ratio):
    leaves = jax.tree.leaves(params)
    ratio_lib.num_to_keep(sum(leaves[i].size for i in
                              self.scored_leaves(params)), ratio)

  def scores(self, values, params, kind):
    """The scored leaves' indices, their scores (``|w|`` for
    ``kind='magnitude'``, else ``|values * w|``), and the Taylor score's
    factors (or None)."""
    param_leaves = jax.tree.leaves(params)
    if kind == 'magnitude':
      chosen = self.scored_leaves(params)
      return chosen, keys.magnitude_scores(
          [param_leaves[i] for i in chosen]), None
    chosen = sorted(values)
    factors = ([values[i] for i in chosen], [param_leaves[i] for i in chosen])
    return chosen, keys.taylor_scores(*factors), factors

  def choose(self, values, params, ratio, kind, guess=None, q=None):
    param_leaves = jax.tree.leaves(params)
    chosen, scores, factors = self.scores(values, params, kind)
    if q is None:
      q = ratio_lib.num_to_keep(sum(param_leaves[i].size for i in chosen),
                                ratio)
    top = search.select_top_q(scores, q, self.method, guess=guess,
                              factors=factors)
    masks = dict(zip(chosen, keys.at_least(scores, top.mask_key)))
    threshold = keys.key_to_score(top.threshold_key,
                                  scores[0].dtype).astype(jnp.float32)
    return Chosen(masks, threshold, top.num_active.astype(jnp.int32), masks)


class NByM(PerWeight):
  """Every weight is a unit; in every block of ``m`` consecutive weights
  along a kernel's input axis the ``n`` best are kept (an `NM` pattern),
  whatever the ratio (it is the pattern's, ``m / n``).

  Args:
    pattern: the `NM` pattern.
    prunable: which leaves are ranked (see `keep_top_taylor`).
  """

  def __init__(self, pattern: pattern_lib.NM,
               prunable: prunable_lib.PrunableSpec = None):
    super().__init__(prunable)
    self.pattern = pattern

  def axes(self, params) -> dict:
    """Leaf index -> the axis its blocks run along (checked)."""
    return pattern_lib.leaf_axes(params, self.pattern,
                                 self.scored_leaves(params))

  def check(self, params, ratio):
    self.axes(params)

  def choose(self, values, params, ratio, kind, guess=None, q=None,
             n=None):
    """As `PerWeight.choose`, per block; ``n``: keep this many of every
    block instead of the pattern's N (traced or not; a gradual schedule)."""
    axes = self.axes(params)
    chosen, scores, _ = self.scores(values, params, kind)
    n = self.pattern.n if n is None else n
    masks = {i: pattern_lib.keep_in_blocks(t, n, self.pattern.m, axes[i])
             for i, t in zip(chosen, scores)}
    num_active = sum(jnp.sum(k, dtype=jnp.int32) for k in masks.values())
    return Chosen(masks, jnp.zeros((), jnp.float32),
                  jnp.asarray(num_active, jnp.int32), masks)


def resolve(groups: Optional[Any], prunable: prunable_lib.PrunableSpec,
            method: str, budget: str = 'params',
            score: str = 'group_taylor', norm: str = 'l2',
            pattern: Any = None) -> Any:
  """The structure to use: ``groups`` (from `find_groups`) with its
  ``budget``, group ``score`` and magnitude ``norm``; else `NByM` with
  ``pattern`` and ``prunable``; else `PerWeight` with ``prunable`` and
  ``method``."""
  pattern = pattern_lib.parse(pattern)
  if pattern is not None and groups is not None:
    raise ValueError(
        f'`pattern` {pattern} keeps N of every M single weights, `groups` '
        'keep whole channels: pass one of them.')
  if groups is None:
    if budget not in ('params', 'flops', 'latency'):
      raise ValueError(f"`budget` must be 'params', 'flops' or 'latency' "
                       f'(the last two with `groups`); got {budget!r}.')
    if budget != 'params':
      raise ValueError(f'`budget={budget!r}` needs `groups` (from '
                       'gsm_optax.find_groups): single weights have no FLOPs '
                       'or latency of their own here.')
    if norm != 'l2':
      raise ValueError(f'`group_norm={norm!r}` ranks groups; single weights '
                       'rank by |w| whatever the norm. Pass `groups` (from '
                       'gsm_optax.find_groups), or leave `group_norm` out.')
    if pattern is not None:
      return NByM(pattern, prunable)
    return PerWeight(prunable, method)
  if prunable is not None:
    raise ValueError(
        '`prunable` chooses leaves for per-weight pruning; with `groups` the '
        'groups decide what is pruned. Pass one of them.')
  return groups.structure(budget, score, norm)
