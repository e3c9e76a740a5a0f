"""Groups of coupled channels, found from the code: the unit of structured GSM.

`find_groups(fn, params, *example_args)` reads the jaxpr of ``fn`` (see
`trace`) and returns a `Groups`: one *family* per channel space that can
shrink (a layer's output channels or neurons, a residual stream, attention
heads), each of ``size`` *groups* (its channels). Removing channel ``j`` of a
family removes, in every *member* (a parameter axis laid out in that
space), the positions that index ``j``: a kernel's output column, its bias
and norm entries, the next kernel's input rows (through a flatten, the rows
that channel ``j`` becomes), every branch joined by a residual add, the
offset slice of a concatenation.

A `Groups` is the structure that every structured transform, the prune, the
report and the slim model read: it scores groups, selects them under a
budget of parameters or FLOPs, and expands a selection to element masks.

Long because the structure is one object: finding it, scoring and
selecting groups under a budget, and expanding a selection.
"""

import collections
import copy
import dataclasses
import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gsm_optax._src import checks
from gsm_optax._src.groups import latency as latency_lib
from gsm_optax._src.groups import layouts as lay
from gsm_optax._src.groups import trace as trace_lib
from gsm_optax._src.spec import structure as structure_lib

BUDGETS = ('params', 'flops', 'latency')  # latency: see `with_latency`
SCORES = ('group_taylor', 'weight_taylor')
NORMS = ('l2', 'l1')  # a group's magnitude: sum of w**2, or of |w|


@dataclasses.dataclass(frozen=True)
class Member:
  """A parameter axis laid out in a family's channel space."""
  leaf: int  # index in jax.tree.leaves(params)
  axis: int
  path: str
  index: np.ndarray  # the family's channel at each position; -1: another's

  @property
  def identity(self) -> bool:
    return (self.index.size > 0 and self.index[0] == 0 and
            np.array_equal(self.index, np.arange(self.index.size)))


@dataclasses.dataclass(frozen=True)
class Family:
  """A channel space of ``size`` channels (groups), with its members."""
  name: str  # its first member, e.g. "['fc1']['kernel'] axis 1"
  size: int
  members: tuple[Member, ...]
  key: tuple[int, int]  # (leaf, axis) of the first member


@dataclasses.dataclass(frozen=True)
class Blocked:
  """A parameter axis the analysis left unpruned, and why."""
  path: str
  axis: int
  reasons: tuple[str, ...]


class Selection(NamedTuple):
  """The active groups (one bool each), the score per unit of cost at the
  budget, and how many groups are active."""
  active: jax.Array
  threshold: jax.Array
  num_active: jax.Array


class Groups:
  """Coupled channels of a function's parameters (see `find_groups`).

  Attributes:
    families: the channel spaces that can shrink, in parameter order.
    blocked: the parameter axes left unpruned, with the reasons.
    unsupported: primitives with no rule, and where they were met.
    num_groups: the total number of channels over all families.
    totals: ``{'params': ..., 'flops': ...}`` of the full model (FLOPs of
      its matmuls and convolutions on the example input).
  """

  def __init__(self, analysis: trace_lib.Analysis, params: Any,
               min_keep: int = 1, round_to: int = 1):
    atoms = analysis.atoms
    leaves, self.treedef = jax.tree.flatten(params)
    self.paths = [normalize_path(jax.tree_util.keystr(p)) for p, _ in
                  jax.tree_util.tree_flatten_with_path(params)[0]]
    self.shapes = [tuple(np.shape(x)) for x in leaves]
    self.dtypes = [jnp.result_type(x) for x in leaves]
    members, blocked = {}, []
    for leaf, layouts in enumerate(analysis.param_layouts):
      for axis, layout in enumerate(layouts):
        roots = atoms.leaves(layout)
        free = [a for a in dict.fromkeys(roots) if not atoms.blocked(a)
                and a in analysis.used]  # an atom may lie in several parts
        if free:
          maps = atoms.index_maps(layout)
          for a in free:
            members.setdefault(a, []).append(Member(
                leaf, axis, self.paths[leaf], maps[a]))
        reasons = sorted(set().union(*(atoms.reasons.get(a, set())
                                       for a in roots if atoms.blocked(a))))
        if not reasons and any(a not in analysis.used for a in roots):
          reasons = ['not used by the function']
        if reasons and self.shapes[leaf][axis] > 1:
          blocked.append(Blocked(self.paths[leaf], axis, tuple(reasons)))
    self.atom_of = {}  # family index -> its root atom
    families = []
    for a, ms in sorted(members.items(), key=lambda kv: (
        kv[1][0].leaf, kv[1][0].axis)):
      first = ms[0]
      self.atom_of[len(families)] = a
      families.append(Family(_family_name(ms, self.shapes),
                             int(atoms.size(lay.atom(a))), tuple(ms),
                             (first.leaf, first.axis)))
    self.families = _unique_names(families, self.shapes)
    self.blocked = tuple(blocked)
    self.unsupported = dict(analysis.unsupported)
    self.min_keep = int(min_keep)
    self.round_to = int(round_to)
    for f in self.families:
      if not 1 <= self.min_keep <= f.size:
        raise ValueError(
            f'`min_keep`={min_keep} must be between 1 and the size of every '
            f'layer ({f.name} has {f.size} channels): a group may never empty '
            'a layer.')
    index = {a: i for i, a in self.atom_of.items()}
    self._atoms, self._index = atoms, index
    self._products = [(p[3], p[4]) for p in analysis.products]
    # FLOPs of each matmul and convolution, by the kernel it multiplies.
    self.flops_by_leaf = {}
    for out, contracted, factor, leaf, _ in analysis.products:
      poly = {k: v * factor for k, v in lay.poly_product(
          [atoms.polynomial(l, index) for l in out + contracted]).items()}
      key = self.paths[leaf] if leaf is not None else '(between activations)'
      self.flops_by_leaf[key] = lay.poly_sum([self.flops_by_leaf.get(key, {}),
                                              poly])
    flops_poly = lay.poly_sum(list(self.flops_by_leaf.values()))
    self.params_by_leaf = {
        self.paths[leaf]: lay.poly_product([atoms.polynomial(l, index)
                                            for l in layouts])
        for leaf, layouts in enumerate(analysis.param_layouts)}
    param_poly = lay.poly_sum(list(self.params_by_leaf.values()))
    self.polynomials = {'params': _Polynomial(param_poly, len(families)),
                        'flops': _Polynomial(flops_poly, len(families))}
    sizes = np.array([f.size for f in families], np.float64)
    self.totals = {b: p.value(sizes) for b, p in self.polynomials.items()}
    self.family_of = np.repeat(np.arange(len(families)),
                               [f.size for f in families]).astype(np.int32)
    self.offsets = np.concatenate([[0], np.cumsum([f.size for f in families])
                                   ]).astype(np.int64)
    # A group's cost: what removing it alone saves (the others all kept).
    self.costs, self._family_costs = {}, {}
    for b, p in self.polynomials.items():
      self._family_costs[b] = np.asarray(
          [self.totals[b] - p.value(sizes - np.eye(len(sizes))[i])
           for i in range(len(families))], np.float64)
      self.costs[b] = self._family_costs[b][self.family_of]
    self._units(self._family_costs)

  def _units(self, family_costs):
    """The units the selection keeps or drops whole: a family of at least
    ``round_to`` channels is cut into runs of ``round_to`` (its channels
    taken best first; the last run holds the rest), so it keeps a multiple
    of ``round_to`` channels or all of them; a smaller family, one channel
    a unit. Static: sizes, families and costs of the units."""
    steps = [self.round_to if f.size >= self.round_to else 1
             for f in self.families]
    sizes, family, rank = [], [], []
    for i, (f, r) in enumerate(zip(self.families, steps)):
      n = -(-f.size // r)
      sizes += [r] * (n - 1) + [f.size - r * (n - 1)]
      family += [i] * n
      rank += list(range(n))
    self.unit_step = np.asarray(steps, np.int64)
    self.rounded = bool(np.any(self.unit_step > 1))
    self.unit_sizes = np.asarray(sizes, np.float64)
    self.unit_family = np.asarray(family, np.int32)
    self.unit_offsets = np.concatenate([[0], np.cumsum(np.bincount(
        self.unit_family, minlength=len(self.families)))]).astype(np.int64)
    # The fewest units of each family: min_keep channels, rounded up.
    self.unit_forced = np.asarray(rank) < -(-self.min_keep // self.unit_step[
        self.unit_family])
    self.unit_costs = {b: c[self.unit_family] * self.unit_sizes
                       for b, c in family_costs.items()}

  # -- latency (see `latency`): what measure_latency times, and the table
  # read as a cost beside params and FLOPs.

  def product_operands(self) -> list:
    """For each matmul and convolution: the families (indices) whose
    widths change its operands, ``(the equation, its operands' layouts)``
    and the parameter leaf it multiplies (or None)."""
    out = []
    for leaf, (eqn, ins) in self._products:
      families = set()
      for layouts in ins:
        for layout in layouts:
          for monomial in self._atoms.polynomial(layout, self._index):
            families.update(monomial)
      families = sorted(f for f in families
                        if self._fewest(f) < self.families[f].size)
      out.append((families, (eqn, ins), leaf))
    return out

  def _fewest(self, f: int) -> int:
    """The fewest channels family ``f`` may keep."""
    r = int(self.unit_step[f])
    return min(self.families[f].size, r * -(-self.min_keep // r))

  def latency_grid(self, f: int, points: int) -> tuple:
    """The widths of family ``f`` that `measure_latency` times."""
    return latency_lib.grid(self._fewest(f), self.families[f].size,
                            int(self.unit_step[f]), points)

  def operand_shapes(self, ins, widths: dict) -> list:
    """The shapes of a product's operands when family ``f`` keeps
    ``widths[f]`` channels (the others all)."""
    kept = {self.atom_of[f]: int(w) for f, w in widths.items()}
    return [tuple(self._atoms.kept_size(l, kept) for l in layouts)
            for layouts in ins]

  def with_latency(self, table: latency_lib.LatencyTable) -> 'Groups':
    """These groups with ``budget='latency'`` too: a kept model's cost is
    the table's time of its products (`measure_latency`), a channel's the
    time its family saves a channel on average from all kept to fewest.

    Args:
      table: a `LatencyTable` measured on these groups (or on groups found
        the same way on the same model).

    Returns:
      A copy of the groups with ``totals['latency']`` and the budget.

    Raises:
      ValueError: the table does not fit these groups.
    """
    if table.kind == 'products':
      products = [fs for fs, _, _ in self.product_operands()]
    else:  # the whole model: any families, each once
      products = [e.families for e in table.entries]
    if len(table.entries) != len(products) or any(
        tuple(e.families) != tuple(fs) or
        any(not 0 <= f < len(self.families) for f in fs) or
        any(g[-1] != self.families[f].size for f, g in zip(fs, e.grids))
        for e, fs in zip(table.entries, products)):
      raise ValueError(
          '`table` was not measured on these groups (its products or their '
          'widths differ): call gsm_optax.measure_latency(groups) on them.')
    new = copy.copy(self)
    cost = latency_lib.Latency(table)
    new.polynomials = dict(self.polynomials, latency=cost)
    sizes = np.array([f.size for f in self.families], np.float64)
    new.totals = dict(self.totals, latency=cost.value(sizes))
    fewest = np.array([self._fewest(i) for i in range(len(sizes))],
                      np.float64)
    saved = [new.totals['latency'] - cost.value(
        np.where(np.arange(len(sizes)) == i, fewest, sizes))
             for i in range(len(sizes))]
    new._family_costs = dict(
        self._family_costs,
        latency=np.asarray(saved) / np.maximum(sizes - fewest, 1))
    new.costs = {b: c[self.family_of]
                 for b, c in new._family_costs.items()}
    new._units(new._family_costs)
    return new

  @property
  def num_groups(self) -> int:
    return int(self.offsets[-1])

  def member_leaves(self) -> list[int]:
    """The parameter leaves that some family touches, in leaf order."""
    return sorted({m.leaf for f in self.families for m in f.members})

  def bind(self, params: Any) -> list[Optional[int]]:
    """For each leaf the groups were found on, the index of the leaf with
    the same path in ``params`` (None if absent): the optimizer may see
    the trainable params only (``wrt=nnx.Param``), the groups the whole
    state (batch statistics too). Where no path matches whole, a leading
    key is taken off one side: groups found on a Linen model's
    ``variables`` (``{'params': ..., 'batch_stats': ...}``) apply to
    ``variables['params']``, the tree a Linen ``TrainState`` trains."""
    with_paths = jax.tree_util.tree_flatten_with_path(params)[0]
    where = {normalize_path(jax.tree_util.keystr(p)): i
             for i, (p, _) in enumerate(with_paths)}
    binding = self._match(where)
    for mine, theirs in enumerate(binding):
      if theirs is not None and tuple(np.shape(with_paths[theirs][1])) != (
          self.shapes[mine]):
        raise ValueError(
            f'`params` do not match the groups: {self.paths[mine]} has shape '
            f'{tuple(np.shape(with_paths[theirs][1]))}, but the groups were '
            f'found with {self.shapes[mine]}. Call gsm_optax.find_groups '
            'again on these params.')
    if not self._binds_a_member(binding):
      raise ValueError(
          '`params` share no parameter with the groups (by path, or by path '
          'below a leading key such as Linen\'s "params"): pass the params '
          'the groups were found on (or part of them, e.g. the nnx.Param '
          "leaves of the same model, or a Linen model's variables['params']).")
    return binding

  def _binds_a_member(self, binding) -> bool:
    return any(binding[m.leaf] is not None for f in self.families
               for m in f.members)

  def _match(self, where: dict) -> list[Optional[int]]:
    """`bind`'s leaf indices: by whole path, else below a leading key of
    the groups' paths (``['params']...``), else below one of ``where``'s."""
    binding = [where.get(path) for path in self.paths]
    if self._binds_a_member(binding) or not where:
      return binding
    for prefix in dict.fromkeys(map(_leading_key, self.paths)):
      binding = [where.get(path[len(prefix):]) if prefix and
                 path.startswith(prefix) else None for path in self.paths]
      if self._binds_a_member(binding):
        return binding
    for prefix in dict.fromkeys(map(_leading_key, where)):
      below = {path[len(prefix):]: i for path, i in where.items()
               if prefix and path.startswith(prefix)}
      binding = [below.get(path) for path in self.paths]
      if self._binds_a_member(binding):
        return binding
    return [None] * len(self.paths)

  def _per_group(self, binding, values) -> jax.Array:
    """Sums ``values(leaf index in the given params)`` (an array like that
    leaf, or None) over each group's member slices."""
    out = []
    for f in self.families:
      total = jnp.zeros(f.size, jnp.float32)
      for m in f.members:
        theirs = binding[m.leaf]
        v = None if theirs is None else values(theirs)
        if v is None:
          continue
        v = v.astype(jnp.float32)
        per_position = jnp.sum(jnp.moveaxis(v, m.axis, 0).reshape(
            v.shape[m.axis], -1), axis=1)
        if m.identity:
          total += per_position
        else:
          ids = np.where(m.index < 0, f.size, m.index)
          total += jax.ops.segment_sum(per_position, ids,
                                       num_segments=f.size + 1)[:f.size]
      out.append(total)
    return jnp.concatenate(out) if out else jnp.zeros(0, jnp.float32)

  def scores(self, updates: dict, params: Any,
             score: str = 'group_taylor') -> jax.Array:
    """One score per group: ``|sum g * w|`` over its members
    (``'group_taylor'``, Molchanov et al. 2019) or ``sum |g * w|``
    (``'weight_taylor'``, GSM's per-weight score summed). ``updates`` maps
    a leaf's index in ``jax.tree.leaves(params)`` to its gradient."""
    if score not in SCORES:
      raise ValueError(f'`score` must be one of {SCORES}; got {score!r}.')
    leaves = jax.tree.leaves(params)
    product = lambda i: (None if updates.get(i) is None else
                         updates[i].astype(jnp.float32) *
                         leaves[i].astype(jnp.float32))
    binding = self.bind(params)
    if score == 'weight_taylor':
      return self._per_group(binding, lambda i: None if product(i) is None
                             else jnp.abs(product(i)))
    return jnp.abs(self._per_group(binding, product))

  def magnitudes(self, params: Any, norm: str = 'l2') -> jax.Array:
    """One number per group: the sum of its members' squared weights
    (``norm='l2'``) or of their absolute values (``'l1'``, Li et al. 2017's
    filter norm)."""
    if norm not in NORMS:
      raise ValueError(f'`group_norm` must be one of {NORMS}; got {norm!r}.')
    leaves = jax.tree.leaves(params)
    size = jnp.square if norm == 'l2' else jnp.abs
    return self._per_group(self.bind(params), lambda i: size(
        leaves[i].astype(jnp.float32)))

  # -- selection under a budget

  def budget(self, ratio: Any, budget: str):
    """The cost the kept model reaches: ``totals[budget] / ratio``; checks
    a concrete ratio against the smallest model the groups allow."""
    self.check_budget(budget)
    if isinstance(ratio, jax.core.Tracer):
      return self.totals[budget] / ratio
    checks.check_number('ratio', ratio, 1.0, float('inf'),
                        f'the compression ratio in {budget}, e.g. 4.0')
    fewest = [self._fewest(i) for i in range(len(self.families))]
    smallest = self.polynomials[budget].value(np.asarray(fewest, np.float64))
    target = self.totals[budget] / float(ratio)
    if smallest > target:
      amount = ((lambda x: f'{x * 1e6:,.1f} µs of latency') if budget ==
                'latency' else (lambda x: f'{x:,.0f} {budget}'))
      raise ValueError(
          f'`ratio`={ratio} asks for {amount(target)} of '
          f"{amount(self.totals[budget])}, but the smallest model the groups "
          f'allow ({self.min_keep} channel(s) per layer, and every part the '
          f'analysis left unpruned) has {amount(smallest)}: use a ratio of at '
          f"most {self.totals[budget] / smallest:.3g}, or a smaller `min_keep`.")
    return target

  def check_budget(self, budget: str) -> None:
    if budget in self.polynomials:
      return
    if budget == 'latency':
      raise ValueError(
          "`budget='latency'` needs the groups' measured latency: "
          '`groups = groups.with_latency(gsm_optax.measure_latency(groups))`.')
    raise ValueError(f'`budget` must be one of {BUDGETS}; got {budget!r}.')

  def select(self, scores: jax.Array, ratio: Any,
             budget: str = 'params') -> Selection:
    """The active groups: ranked by score per unit of cost (a group's cost
    is what removing it alone saves), the best ``min_keep`` of each family
    first, and kept in that order while the kept model's exact cost stays
    within ``totals[budget] / ratio`` (ties at the last group kept are kept,
    and may go over); then, past the first group that does not fit, every
    later group in the order that still fits is kept too, so the budget is
    filled: the model is at least ``ratio`` times smaller in ``budget``, and
    no group left out would fit. A NaN score ranks first."""
    target = self.budget(ratio, budget)
    scores = jnp.asarray(scores, jnp.float32)
    unit = self._unit_of(scores)
    num_units = len(self.unit_sizes)
    cost = jnp.asarray(self.unit_costs[budget], jnp.float32)
    unit_scores = jax.ops.segment_sum(scores, unit, num_units)
    free = cost <= 0  # saves nothing alone (a measured latency's plateau)
    density = unit_scores / jnp.where(free, 1.0, cost)
    # The min_keep best of each family first: with round_to the units are
    # ranked runs, so the first ones of each family; else by score. Then
    # the units that cost nothing alone, by score, then the rest by score
    # per cost. A free unit is free only beside the others' full widths,
    # so it is not tied with the forced ones (kept all at once, they could
    # break the budget).
    forced = self.unit_forced if self.rounded else self._best_of_each(scores)
    tier = jnp.where(jnp.isnan(density) | forced, 2, jnp.where(free, 1, 0))
    key = jnp.where(tier == 2, jnp.inf, density)
    order = jnp.lexsort((-key, -tier))
    family = jnp.asarray(
        (self.unit_family[:, None] == np.arange(len(self.families))[None, :])
        * self.unit_sizes[:, None], jnp.float32)  # channels a unit adds
    polynomial = self.polynomials[budget]
    limit = jnp.asarray(target, jnp.float32) * (1 + 1e-6)
    reached = polynomial.value(jnp.cumsum(family[order], axis=0))
    # The last prefix within the budget whose shorter prefixes all are (the
    # costs grow along the order; a measured latency's cross terms may let
    # a longer one dip back), never fewer than the forced units (min_keep)
    # of each family.
    within = jnp.sum(jnp.cumprod(reached <= limit))
    k = jnp.maximum(within, int(self.unit_forced.sum())) - 1
    last_tier, last_key = tier[order[k]], key[order[k]]
    active = (tier > last_tier) | ((tier == last_tier) & (key >= last_key))
    threshold = jnp.where(last_tier == 0, last_key, jnp.inf)
    rank = jnp.asarray(np.arange(num_units) - self.unit_offsets[
        self.unit_family], jnp.int32)

    def fill(state):
      """The units after the last kept, in order, that fit alone, each kept
      while the cost with those before it fits: the walk that adds every
      unit that still fits, up to the next that does not (the costs only
      grow, so one left out never fits later). With ``round_to``, only a
      family's next unit (its best channels first) may be added: one a
      family a round."""
      active, _ = state
      counts = active.astype(jnp.float32) @ family
      fits = ~active & (polynomial.value(counts[None] + family) <= limit)
      if self.rounded:
        kept_units = jax.ops.segment_sum(active.astype(jnp.int32),
                                         jnp.asarray(self.unit_family),
                                         len(self.families))
        fits &= rank == kept_units[self.unit_family]
      taken = fits[order]
      cumulative = polynomial.value(
          counts[None] + jnp.cumsum(taken[:, None] * family[order], axis=0))
      added = taken & (jnp.cumprod(cumulative <= limit) > 0)
      return active.at[order].set(active[order] | added), jnp.any(added)

    active, _ = jax.lax.while_loop(lambda state: state[1], fill,
                                   (active, jnp.asarray(True)))
    groups_active = active[unit]
    return Selection(groups_active, threshold.astype(jnp.float32),
                     jnp.sum(groups_active, dtype=jnp.int32))

  def _unit_of(self, scores):
    """Each channel's unit: within its family, channels ranked by score
    (NaN first, ties by index), cut into runs of the family's step."""
    if not self.rounded:
      return jnp.arange(self.num_groups)
    parts = []
    for i in range(len(self.families)):
      s = scores[self.offsets[i]:self.offsets[i + 1]]
      s = jnp.where(jnp.isnan(s), jnp.inf, s)
      rank = jnp.argsort(jnp.argsort(-s, stable=True), stable=True)
      parts.append(self.unit_offsets[i] + rank // int(self.unit_step[i]))
    return jnp.concatenate(parts) if parts else jnp.zeros(0, jnp.int32)

  def _best_of_each(self, scores):
    """The ``min_keep`` best-scored groups of each family (NaN first)."""
    best = []
    for i, f in enumerate(self.families):
      s = scores[self.offsets[i]:self.offsets[i + 1]]
      s = jnp.where(jnp.isnan(s), jnp.inf, s)
      rank = jnp.argsort(jnp.argsort(-s, stable=True), stable=True)
      best.append(rank < self.min_keep)
    return jnp.concatenate(best) if best else jnp.zeros(0, bool)

  def kept_cost(self, active: jax.Array, budget: str) -> jax.Array:
    """The exact cost of the model that keeps the ``active`` groups."""
    counts = jnp.stack([jnp.sum(active[self.offsets[i]:self.offsets[i + 1]])
                        for i in range(len(self.families))]).astype(
                            jnp.float32)
    return self.polynomials[budget].value(counts[None])[0]

  # -- expansion to element masks

  def expand(self, active: jax.Array, params: Any) -> dict:
    """One bool mask per leaf of ``params`` that a family touches (by leaf
    index): an element is kept when every group it belongs to is."""
    binding = self.bind(params)
    masks = {}
    for i, f in enumerate(self.families):
      keep = active[self.offsets[i]:self.offsets[i + 1]]
      for m in f.members:
        theirs = binding[m.leaf]
        if theirs is None:
          continue
        along = jnp.where(jnp.asarray(m.index) < 0, True,
                          keep[np.maximum(m.index, 0)])
        shape = [1] * len(self.shapes[m.leaf])
        shape[m.axis] = self.shapes[m.leaf][m.axis]
        along = along.reshape(shape)
        masks[theirs] = along if theirs not in masks else (
            masks[theirs] & along)
    leaves = jax.tree.leaves(params)
    return {i: jnp.broadcast_to(m, jnp.shape(leaves[i]))
            for i, m in masks.items()}

  def zeroed(self, active: Any, params: Any) -> Any:
    """``params`` with every element of an inactive group at zero (the
    masks of `expand`), the rest as they are: the model a selection keeps,
    ready for `gsm_optax.slim`."""
    masks = self.expand(jnp.asarray(active), params)
    leaves, treedef = jax.tree.flatten(params)
    return jax.tree.unflatten(treedef, [
        jnp.where(masks[i], x, 0) if i in masks else x
        for i, x in enumerate(leaves)])

  def structure(self, budget: str = 'params', score: str = 'group_taylor',
                norm: str = 'l2') -> '_GroupStructure':
    """These groups as the structure the transforms read (see
    `gsm_optax._src.spec.structure`), ranked by ``score`` when training
    and by their ``norm`` (`magnitudes`) when pruning."""
    return _GroupStructure(self, budget, score, norm)

  def kept_indices(self, active: Any) -> list[list[np.ndarray]]:
    """For each leaf and axis, the positions the slim model keeps."""
    active = np.asarray(active)
    kept = [[np.ones(n, bool) for n in shape] for shape in self.shapes]
    for i, f in enumerate(self.families):
      keep = active[self.offsets[i]:self.offsets[i + 1]]
      for m in f.members:
        kept[m.leaf][m.axis] &= np.where(m.index < 0, True,
                                         keep[np.maximum(m.index, 0)])
    return [[np.flatnonzero(k) for k in axes] for axes in kept]

  def __repr__(self):
    return (f'Groups({len(self.families)} families, {self.num_groups} '
            f'groups, {len(self.blocked)} axes left unpruned)')

  def describe(self) -> str:
    """What was found: each family with its members, and what was left
    unpruned and why."""
    lines = [f'{len(self.families)} families, {self.num_groups} groups; '
             f"{self.totals['params']:,.0f} params, "
             f"{self.totals['flops']:,.0f} FLOPs on the example input"]
    for f in self.families:
      members = ', '.join(f'{m.path}[{m.axis}]' for m in f.members)
      lines.append(f'  {f.name}: {f.size} channels; {members}')
    if self.blocked:
      lines.append('left unpruned:')
      lines += [f'  {b.path} axis {b.axis}: {"; ".join(b.reasons)}'
                for b in self.blocked]
    if self.unsupported:
      lines.append('primitives with no rule (their axes left unpruned): ' +
                   ', '.join(f'{k} ({v})' if v else k
                             for k, v in self.unsupported.items()))
    return '\n'.join(lines)


class _GroupStructure:
  """`Groups` with a budget and a score: the structure of structured GSM."""

  def __init__(self, groups: Groups, budget: str, score: str,
               norm: str = 'l2'):
    groups.check_budget(budget)
    if score not in SCORES:
      raise ValueError(f'`score` must be one of {SCORES}; got {score!r}.')
    self.groups, self.budget, self.score = groups, budget, score
    self.norm = norm

  def scored_leaves(self, params):
    binding = self.groups.bind(params)
    return sorted({binding[m.leaf] for f in self.groups.families
                   for m in f.members if binding[m.leaf] is not None})

  def unit_keys(self, params):
    del params
    return ['groups']

  def unit_shapes(self, params):
    del params
    return [(self.groups.num_groups,)]

  def check(self, params, ratio):
    self.groups.bind(params)
    self.groups.budget(ratio, self.budget)

  def choose(self, values, params, ratio, kind, guess=None, q=None):
    del guess, q  # the groups are few: no search to start; the budget counts
    if kind == 'magnitude':
      scores = self.groups.magnitudes(params, self.norm)
    else:
      scores = self.groups.scores(values, params, self.score)
    chosen = self.groups.select(scores, ratio, self.budget)
    return structure_lib.Chosen({'groups': chosen.active}, chosen.threshold,
                                chosen.num_active,
                                self.groups.expand(chosen.active, params))


def _family_name(members, shapes) -> str:
  """A family's name: the layer whose output axis it is (an attention
  projection's: its head dims), else the attention whose heads it is,
  else its first member."""
  for m in members:
    if m.path.endswith("['kernel']") and m.axis == len(shapes[m.leaf]) - 1:
      layer = m.path[:-len("['kernel']")] or m.path
      return f'{layer} head dims' if len(shapes[m.leaf]) == 3 else layer
  for m in members:  # attention's (in, heads, head_dim) kernels
    if m.path.endswith("['kernel']") and len(shapes[m.leaf]) == 3 and (
        m.axis == 1):
      layer = m.path[:-len("['kernel']")]
      return f"{layer[:layer.rfind('[')] or layer} heads"
  return f'{members[0].path} axis {members[0].axis}'


def _unique_names(families, shapes) -> tuple:
  """Families that share a name (the parts of a fused projection, a
  grouped-query attention's two kinds of heads) told apart by what their
  channels are in the layer's output axis: heads (each channel a run of
  columns), head dims (channels repeating), and the columns they take where
  they share the axis, or key-value heads from the query heads that share
  one; a number where even that is the same."""
  counts = collections.Counter(f.name for f in families)
  renamed = []
  for f in families:
    if counts[f.name] > 1:
      kernels = [m for m in f.members if m.path.endswith("['kernel']")]
      m = max(kernels or f.members, key=lambda m: m.index.size)
      taken = np.flatnonzero(m.index >= 0)
      channels = m.index[taken]
      runs = channels.size > 1 and channels[0] == channels[1]
      repeats = np.unique(channels).size < channels.size
      if m.axis == len(shapes[m.leaf]) - 1:  # a projection's output axis
        kind = 'heads' if runs else 'head dims' if repeats else 'channels'
      else:  # the heads axis of an (in, heads, head_dim) kernel
        kind = ('key-value heads' if runs else 'query heads per key-value '
                'head' if repeats else 'heads')
      span = (f' [{taken[0]}:{taken[-1] + 1}]' if taken.size < m.index.size
              else '')
      base = f.name[:-len(' heads')] if f.name.endswith(' heads') else f.name
      f = dataclasses.replace(f, name=f'{base} {kind}{span}')
    renamed.append(f)
  counts = collections.Counter(f.name for f in renamed)
  seen = collections.Counter()
  for i, f in enumerate(renamed):
    if counts[f.name] > 1:
      seen[f.name] += 1
      renamed[i] = dataclasses.replace(f, name=f'{f.name} #{seen[f.name]}')
  return tuple(renamed)


def _leading_key(path: str) -> str:
  """``"['params']"`` of ``"['params']['Conv_0']['kernel']"`` ('' if the
  path has one key only)."""
  end = path.find(']') + 1
  return path[:end] if 0 < end < len(path) else ''


def normalize_path(path: str) -> str:
  """A leaf's path without Flax NNX's ``.value`` attribute."""
  for suffix in ('.value', '.raw_value'):
    if path.endswith(suffix):
      return path[:-len(suffix)]
  return path


def polynomial(terms: dict, num_families: int) -> '_Polynomial':
  """A cost polynomial (see `Groups.params_by_leaf`) to evaluate."""
  return _Polynomial(terms, num_families)


class _Polynomial:
  """``sum_t coef_t * prod_f counts[f] ** e_tf``, evaluated for rows of
  counts (NumPy or jax)."""

  def __init__(self, terms: dict, num_families: int):
    self.terms = {k: float(v) for k, v in terms.items() if v}
    degree = max([len(k) for k in self.terms] + [1])
    # Each monomial's families, padded with the index of a column of ones.
    self.index = np.full((max(len(self.terms), 1), degree), num_families,
                         np.int32)
    self.coef = np.zeros(max(len(self.terms), 1), np.float64)
    for t, (k, v) in enumerate(self.terms.items()):
      self.index[t, :len(k)] = k
      self.coef[t] = v

  def value(self, counts):
    xp = np if isinstance(counts, np.ndarray) else jnp
    counts = xp.asarray(counts)
    squeeze = counts.ndim == 1
    counts = counts[None] if squeeze else counts
    ones = xp.ones(counts.shape[:1] + (1,), counts.dtype)
    padded = xp.concatenate([counts, ones], axis=1)
    coef = self.coef if xp is np else jnp.asarray(self.coef, counts.dtype)
    out = xp.prod(padded[:, self.index], axis=-1) @ coef
    return float(out[0]) if squeeze and xp is np else (
        out[0] if squeeze else out)


def find_groups(fn: Any, params: Any, *example_args: Any,
                min_keep: int = 1, round_to: int = 1,
                **example_kwargs: Any) -> Groups:
  """The groups of coupled channels of ``fn(params, *example_args)``.

  Reads the jaxpr of ``fn`` (no hand-written layer list): output channel
  ``j`` of a kernel couples with its bias ``[j]``, the norms' scale and
  shift ``[j]``, everything elementwise in between, and the next kernel's
  input slice ``j`` (through a flatten, the rows channel ``j`` becomes); a
  residual add ties the channels of every branch it joins; a concatenation
  offsets them; attention heads group the query, key and value columns of a
  head with the output projection's rows for it. An axis that the analysis
  cannot follow (an unknown primitive, a reshape that mixes channels, a
  norm's statistics over the channels, an input or output of ``fn``) is
  left unpruned and reported in ``groups.blocked``, never guessed.

  Args:
    fn: ``fn(params, *args)``, e.g. ``lambda p, x: nnx.merge(graphdef,
      p)(x)``.
    params: the parameters (any pytree of arrays).
    *example_args: an example input (its shapes set the FLOPs counted).
    min_keep: the fewest channels a family (a layer) may keep, >= 1.
    round_to: keep every family of at least this many channels at a
      multiple of it (or whole): widths the device runs fast (8 or 16 for
      CPU vectors, 8 for tensor cores). The budget still holds: whole runs
      of ``round_to`` channels, best first, are what the selection ranks.
    **example_kwargs: keyword arguments of ``fn``.

  Returns:
    A `Groups`.

  Raises:
    ValueError: ``fn`` cannot be traced with these params and inputs, or
      ``min_keep`` is out of range.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from gsm_optax import find_groups
    >>> params = {'w1': jnp.ones((4, 8)), 'b1': jnp.zeros(8),
    ...           'w2': jnp.ones((8, 3))}
    >>> mlp = lambda p, x: jax.nn.relu(x @ p['w1'] + p['b1']) @ p['w2']
    >>> groups = find_groups(mlp, params, jnp.ones((2, 4)))
    >>> [(f.name, f.size) for f in groups.families]
    [("['b1'] axis 0", 8)]
    >>> sorted(m.path for m in groups.families[0].members)
    ["['b1']", "['w1']", "['w2']"]
  """
  checks.check_number('min_keep', min_keep, 1, math.inf, 'e.g. 1')
  if not isinstance(round_to, (int, np.integer)) or round_to < 1:
    raise ValueError(f'`round_to`={round_to!r} must be an int >= 1 (the '
                     'multiple kept widths are rounded to, e.g. 8).')
  try:
    closed, _ = trace_lib.trace(fn, params, example_args, example_kwargs)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f'find_groups could not trace `fn(params, *example_args)`: '
        f'{type(e).__name__}: {e}. Pass the function that runs the model on '
        "its params (e.g. `lambda p, x: nnx.merge(graphdef, p)(x)`), the "
        'params it takes and an input it accepts.') from e
  analysis = trace_lib.analyze(closed, len(jax.tree.leaves(params)))
  return Groups(analysis, params, min_keep, round_to)
