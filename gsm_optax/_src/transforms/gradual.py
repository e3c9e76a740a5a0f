"""Gradual magnitude pruning (Zhu & Gupta 2017): the baseline users pick;
with groups, gradual channel pruning by magnitude or a Taylor group score
(in the manner of Molchanov et al. 2019)."""

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from gsm_optax._src.selection import keys
from gsm_optax._src.selection import search
from gsm_optax._src.spec import pattern as pattern_lib
from gsm_optax._src.spec import prunable as prunable_lib
from gsm_optax._src.spec import ratio as ratio_lib
from gsm_optax._src.spec import structure as structure_lib

SCORES = ('magnitude', 'group_taylor', 'weight_taylor')


class GradualMagnitudeState(NamedTuple):
  """Step count and the current keep-masks (True = kept), like the params."""
  count: jax.Array
  masks: Any


def cubic_keep_fraction(step, ratio: float, begin_step: int, end_step: int):
  r"""Fraction of weights kept at ``step`` under the cubic schedule.

  Zhu & Gupta's sparsity ``s_t = s_f + (s_i - s_f)(1 - (t - t_0)/(n \Delta t))^3``
  with ``s_i = 0`` and ``s_f = 1 - 1/ratio``; the kept fraction is ``1 - s_t``.
  """
  span = max(end_step - begin_step, 1)
  t = jnp.clip((step - begin_step) / span, 0.0, 1.0)
  final_sparsity = 1.0 - 1.0 / ratio
  return 1.0 - final_sparsity * (1.0 - (1.0 - t) ** 3)


def gradual_magnitude_pruning(ratio: Optional[float], begin_step: int,
                              end_step: int,
                              update_every: int = 100,
                              global_ranking: bool = True,
                              prunable: prunable_lib.PrunableSpec = None,
                              groups: Optional[Any] = None,
                              budget: str = 'params',
                              score: str = 'magnitude',
                              pattern: Any = None
                              ) -> optax.GradientTransformation:
  """Prunes by magnitude on a cubic schedule, keeping pruned weights at zero.

  Every ``update_every`` steps from ``begin_step`` to ``end_step`` the mask is
  recomputed from the magnitudes of the weights this step would produce,
  keeping the fraction given by `cubic_keep_fraction` (at ``end_step`` exactly
  ``floor(N / ratio)``, as `prune`). Between updates the mask is fixed. Chain
  it *last*, after the optimizer: it turns the update of every pruned weight
  into ``-w``, so the weight becomes exactly zero (the default in TF-MOT and
  jaxpruner).

  Args:
    ratio: the final compression ratio C >= 1.
    begin_step: first step of pruning.
    end_step: step at which the final sparsity is reached.
    update_every: steps between mask updates (Zhu & Gupta's delta t).
    global_ranking: rank all prunable weights together (like GSM) or keep
      ``floor(n_layer / ratio)``-ish per layer.
    prunable: which leaves are pruned (see `keep_top_taylor`).
    groups: None (single weights), or a `Groups` (from `find_groups`):
      whole groups (neurons, channels, heads) are removed instead, ranked
      globally per unit of cost until the kept model's ``budget`` is the
      cubic schedule's fraction of the dense one's (``1 / ratio`` at
      ``end_step``); a removed group stays removed.
    budget: with ``groups``: ``'params'``, ``'flops'`` or ``'latency'``
      (groups with a measured table, `Groups.with_latency`).
    score: ``'magnitude'`` (the sum of a group's squared weights), or with
      ``groups`` a Taylor score of the update this step applies (chained
      after the optimizer: its momentum average of the gradient, weight
      decay included) times the weights, ``'group_taylor'`` ``|sum u*w|``
      or ``'weight_taylor'`` ``sum |u*w|`` (see `Groups.scores`).
    pattern: None, or an N:M pattern (`NM` or ``'2:4'``; pass
      ``ratio=None``): every block of M weights along a kernel's input axis
      keeps its largest ``max(N, ceil(M * keep))`` on the cubic schedule's
      kept fraction, exactly N from ``end_step``.

  Returns:
    An `optax.GradientTransformation`; ``update`` needs ``params``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from gsm_optax import gradual_magnitude_pruning
    >>> params = {'w': jnp.array([[1., -2.], [3., 4.]])}
    >>> tx = gradual_magnitude_pruning(ratio=4, begin_step=0, end_step=0)
    >>> updates, _ = tx.update({'w': jnp.zeros((2, 2))}, tx.init(params), params)
    >>> optax.apply_updates(params, updates)['w'].tolist()
    [[0.0, 0.0], [0.0, 4.0]]

  References:
    Zhu & Gupta, `To prune, or not to prune: exploring the efficacy of pruning
    for model compression <https://arxiv.org/abs/1710.01878>`_, 2017

    Molchanov et al., `Importance Estimation for Neural Network Pruning
    <https://arxiv.org/abs/1906.10771>`_, CVPR 2019
  """
  ratio = pattern_lib.ratio_for(ratio, pattern)
  ratio_lib.validate_ratio(ratio)
  if end_step < begin_step or update_every < 1:
    raise ValueError('`end_step` must be >= `begin_step` and `update_every` '
                     f'>= 1; got {begin_step}, {end_step}, {update_every}.')
  if score not in SCORES:
    raise ValueError(f'`score` must be one of {SCORES}; got {score!r}.')
  if groups is None and score != 'magnitude':
    raise ValueError(f"`score={score!r}` scores groups: pass `groups` (from "
                     "gsm_optax.find_groups), or keep `score='magnitude'`.")
  if groups is not None:
    if not global_ranking:
      raise ValueError('`groups` are ranked globally (per unit of cost): '
                       'leave `global_ranking=True`.')
    return _gradual_groups(ratio, begin_step, end_step, update_every,
                           structure_lib.resolve(
                               groups, prunable, 'interpolate', budget,
                               'group_taylor' if score == 'magnitude'
                               else score), score)
  structure = structure_lib.resolve(None, prunable, 'interpolate', budget,
                                    pattern=pattern)
  if pattern is not None and not global_ranking:
    raise ValueError('`pattern` keeps N of every M in each block: leave '
                     '`global_ranking=True`.')

  def init_fn(params):
    structure.check(params, ratio)
    flags = prunable_lib.resolve_prunable(params, prunable)
    leaves, treedef = jax.tree.flatten(params)
    prunable_lib.check_float_params(params, 'gradual_magnitude_pruning')
    ratio_lib.num_to_keep(sum(x.size for x, f in zip(leaves, flags) if f),
                             ratio)
    masks = [jnp.ones(jnp.shape(x), bool) for x in leaves]
    return GradualMagnitudeState(jnp.zeros((), jnp.int32),
                                 jax.tree.unflatten(treedef, masks))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('gradual_magnitude_pruning needs `params`: call '
                       '`tx.update(grads, state, params)`.')
    flags = prunable_lib.resolve_prunable(params, prunable)
    leaves, treedef = jax.tree.flatten(params)
    update_leaves = treedef.flatten_up_to(updates)
    mask_leaves = treedef.flatten_up_to(state.masks)
    chosen = [i for i, f in enumerate(flags) if f]
    # Rank the weights this step would produce, with pruned weights at zero:
    # their momentum must not bring them back (as in TF-MOT).
    new_weights = [jnp.where(mask_leaves[i], leaves[i] + update_leaves[i], 0)
                   for i in chosen]
    keep = cubic_keep_fraction(state.count, ratio, begin_step, end_step)
    at_end = state.count >= end_step

    def magnitude_masks():
      if pattern is not None:  # N:M: the block's count on the schedule
        m, final_n = structure.pattern.m, structure.pattern.n
        n = jnp.where(at_end, final_n, jnp.maximum(
            final_n, jnp.ceil(m * keep - 1e-4).astype(jnp.int32)))
        produced = list(leaves)
        for i, w in zip(chosen, new_weights):
          produced[i] = w
        masks = structure.choose({}, jax.tree.unflatten(treedef, produced),
                                 ratio, 'magnitude', n=n).masks
        return [masks[i] & ((w != 0) | c) for i, w, c in zip(
            chosen, new_weights, current)]
      mags = keys.magnitude_scores(new_weights)
      groups = [mags] if global_ranking else [[m] for m in mags]
      masks = []
      for group in groups:
        n = sum(m.size for m in group)
        final_q = jnp.maximum(ratio_lib.floor_divide(n, ratio), 1)
        # float32 rounding can put floor(n * keep) one below final_q just
        # before the end; the final update would then rank more weights than
        # are nonzero, its threshold would be 0 and every weight would revive.
        q = jnp.where(at_end, final_q, jnp.maximum(
            jnp.floor(n * keep).astype(jnp.int32), final_q))
        key, _ = search.global_threshold(group, jnp.clip(q, 1, n))
        masks += keys.at_least(group, key)
      # A pruned weight is exactly zero: a tie at threshold 0 never revives it.
      return [m & ((w != 0) | c) for m, w, c in zip(masks, new_weights,
                                                     current)]

    due = ((state.count >= begin_step) & (state.count <= end_step) &
           (((state.count - begin_step) % update_every == 0) |
            (state.count == end_step)))
    current = [mask_leaves[i] for i in chosen]
    new_masks = jax.lax.cond(due, magnitude_masks, lambda: current)
    for i, m in zip(chosen, new_masks):
      mask_leaves[i] = m
      update_leaves[i] = jnp.where(m, update_leaves[i], -leaves[i])
    return (jax.tree.unflatten(treedef, update_leaves),
            GradualMagnitudeState(state.count + 1,
                                  jax.tree.unflatten(treedef, mask_leaves)))

  return optax.GradientTransformation(init_fn, update_fn)


def _gradual_groups(ratio, begin_step, end_step, update_every, structure,
                    score):
  """`gradual_magnitude_pruning` over groups (``structure``: the groups
  with their budget and Taylor score)."""

  def init_fn(params):
    structure.check(params, ratio)
    return GradualMagnitudeState(
        jnp.zeros((), jnp.int32),
        jax.tree.map(lambda x: jnp.ones(jnp.shape(x), bool), params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('gradual_magnitude_pruning needs `params`: call '
                       '`tx.update(grads, state, params)`.')
    leaves, treedef = jax.tree.flatten(params)
    update_leaves = treedef.flatten_up_to(updates)
    mask_leaves = treedef.flatten_up_to(state.masks)
    chosen = structure.scored_leaves(params)
    # Scored on the weights this step would produce, removed groups at zero.
    new_weights = list(leaves)
    for i in chosen:
      new_weights[i] = jnp.where(mask_leaves[i], leaves[i] + update_leaves[i],
                                 0)
    keep = cubic_keep_fraction(state.count, ratio, begin_step, end_step)
    # 1 / keep in float32 can end just above C: end on C itself.
    now = jnp.where(state.count >= end_step, ratio,
                    jnp.minimum(1.0 / keep, ratio))

    def group_masks():
      top = structure.choose({i: update_leaves[i] for i in chosen},
                             jax.tree.unflatten(treedef, new_weights), now,
                             'magnitude' if score == 'magnitude' else 'taylor')
      return [top.masks[i] & mask_leaves[i] if i in top.masks
              else mask_leaves[i] for i in chosen]

    due = ((state.count >= begin_step) & (state.count <= end_step) &
           (((state.count - begin_step) % update_every == 0) |
            (state.count == end_step)))
    new_masks = jax.lax.cond(due, group_masks,
                             lambda: [mask_leaves[i] for i in chosen])
    for i, m in zip(chosen, new_masks):
      mask_leaves[i] = m
      update_leaves[i] = jnp.where(m, update_leaves[i], -leaves[i])
    return (jax.tree.unflatten(treedef, update_leaves),
            GradualMagnitudeState(state.count + 1,
                                  jax.tree.unflatten(treedef, mask_leaves)))

  return optax.GradientTransformation(init_fn, update_fn)
