"""The global Taylor mask: GSM's one new idea, as an Optax transformation."""

from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from gsm_optax._src import checks
from gsm_optax._src.spec import pattern as pattern_lib
from gsm_optax._src.spec import prunable as prunable_lib
from gsm_optax._src.spec import ratio as ratio_lib
from gsm_optax._src.spec import structure as structure_lib


class KeepTopTaylorState(NamedTuple):
  """The last step's selection (for logging; the next step's search starts
  from its threshold), and what the options keep.

  With the defaults (the paper's rule, no churn) only the first two fields
  hold arrays; the others are None or empty.
  """
  threshold: jax.Array  # float32 scalar: the Q-th largest score
  num_active: jax.Array  # int32 scalar: weights whose gradient passed (>= Q)
  # int32 scalar, with ``track_churn``: weights active at this step that
  # were not at the last one (at the first step: all active ones).
  num_entered: Optional[jax.Array] = None
  # With ``track_churn``: the last step's mask, one bool array per prunable
  # leaf.
  active: tuple = ()
  # With ``score_decay``: the exponential average of the gradient, one
  # array per prunable leaf, and the step count for a decay schedule.
  score_trace: tuple = ()
  count: Optional[jax.Array] = None


def keep_top_taylor(ratio: Optional[float] = None,
                    prunable: prunable_lib.PrunableSpec = None,
                    method: str = 'auto',
                    score_decay: Union[None, float, optax.Schedule] = None,
                    track_churn: bool = False,
                    groups: Optional[Any] = None,
                    budget: str = 'params',
                    score: str = 'group_taylor',
                    pattern: Any = None
                    ) -> optax.GradientTransformation:
  r"""Passes the gradient only to the Q weights with the largest ``|g * w|``.

  The mask of Global Sparse Momentum SGD: with ``T = |g * w|`` over all
  prunable leaves together and ``Q = floor(N / ratio)``,

  .. math::
    B = T \ge (\text{Q-th largest value of } T), \qquad g \leftarrow B \odot g

  recomputed every step, ties kept. If fewer than Q scores are non-zero the
  threshold is 0 and every gradient passes (as in the official code). The
  exact search starts from the last step's threshold, kept in the state;
  the start changes its number of passes, never the mask.
  Non-prunable leaves pass unchanged. Chain it before weight decay and
  momentum (see `gsm`) or before any other optimizer.

  Smoothed ranking (``score_decay``, off by default): the score is
  ``|m * w|`` with ``m`` an exponential average of the gradient,
  ``m <- d * m + (1 - d) * g`` (``m`` starts at zero; no bias correction,
  which would scale every score alike and change no ranking). The mask is
  still exactly the top Q of the score it ranks, ties kept, and the weights
  it selects still receive the current gradient ``g``. A slowly changing
  score keeps the active set stable, so the passive weights decay. It costs
  one array like each prunable leaf in the state.

  Non-finite scores: a NaN score ranks above +inf, which ranks above every
  finite score, so a weight with a NaN or infinite gradient stays active and
  its non-finite update reaches the optimizer, where
  `optax.apply_if_finite` can skip the step. The mask never hides it.

  Args:
    ratio: the global compression ratio C >= 1; Q = floor(N / C) exactly for
      the ratio's own value (see `num_to_keep`), so a traced float32 ratio
      (e.g. from `optax.inject_hyperparams`) keeps what the same float32
      value keeps as a Python float. A concrete ratio is checked when the
      transformation is built; a traced one that is NaN, below 1 or keeps
      nothing raises (through `jax.debug.callback`) when the step runs.
    prunable: which leaves are ranked: None (every leaf with ndim >= 2), a
      pytree of bools like the params, or a callable ``params -> pytree``.
    method: ``'auto'`` (default: ``'radix'`` on the CPU for float32 scores,
      else ``'interpolate'``), ``'interpolate'``, ``'bisect'`` or ``'radix'``
      (sort-free: no concatenation, traced Q), or ``'top_k'``
      (``jax.lax.top_k`` on all scores). The masks are identical; see
      `global_threshold`.
    score_decay: None (default: the paper's ``|g * w|``), or the decay
      ``d`` in ``[0, 1)`` of the gradient's exponential average that the
      score ranks instead, a float or an optax schedule of the step count.
    track_churn: also keep the last step's mask (one bool per prunable
      weight) and report ``num_entered``, how many weights entered the
      active set at this step.
    groups: None (single weights are ranked), or a `Groups` from
      `find_groups`: then whole channels are ranked (structured GSM),
      ``ratio`` is a compression ratio in ``budget``, and the gradient of
      every slice of a passive group is masked. The state's
      ``num_active`` then counts groups and ``threshold`` is the score per
      unit of cost at the budget (see `Groups.select`).
    budget: with ``groups``: ``'params'``, ``'flops'`` or ``'latency'``
      (groups with a measured table, `Groups.with_latency`).
    score: with ``groups``: ``'group_taylor'`` (default, ``|sum g * w|``
      over a group, Molchanov et al. 2019) or ``'weight_taylor'``
      (``sum |g * w|``).
    pattern: None, or an N:M pattern (`NM`, or a string such as
      ``'2:4'``): the active set is, in every block of M consecutive
      weights along a kernel's input axis, the N with the largest score
      (GSM's rule with an N:M active set); ``ratio`` is then the pattern's
      ``M / N`` and may be left out. ``num_active`` counts the active
      weights and ``threshold`` is 0.

  Returns:
    An `optax.GradientTransformation` whose ``update`` needs ``params``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from gsm_optax import keep_top_taylor
    >>> params = {'w': jnp.array([[1., 2.], [3., 4.]]), 'b': jnp.ones(2)}
    >>> grads = {'w': jnp.array([[1., 1.], [1., 1.]]), 'b': jnp.ones(2)}
    >>> tx = keep_top_taylor(ratio=2.0)
    >>> updates, state = tx.update(grads, tx.init(params), params)
    >>> updates['w'].tolist(), int(state.num_active)
    ([[0.0, 0.0], [1.0, 1.0]], 2)

  References:
    Ding et al, `Global Sparse Momentum SGD for Pruning Very Deep Neural
    Networks <https://arxiv.org/abs/1909.12778>`_, 2019
  """
  return as_transformation(taylor_mask(ratio, prunable, method, score_decay,
                                      track_churn, groups, budget, score,
                                      pattern=pattern))


def as_transformation(mask) -> optax.GradientTransformation:
  """The transformation of a `taylor_mask` pair (the masked updates)."""
  init_fn, select = mask

  def update_fn(updates, state, params=None):
    masked, state, _ = select(updates, state, params)
    return masked, state

  return optax.GradientTransformation(init_fn, update_fn)


def taylor_mask(ratio, prunable, method, score_decay, track_churn,
                 groups=None, budget='params', score='group_taylor',
                 passive_weight_decay=0.0, decayed=None, pattern=None):
  """`keep_top_taylor`'s ``init`` and ``select``: ``select(updates, state,
  params)`` returns the masked updates, the new state, and one mask per
  leaf of the params (True where the gradient passes: the active units,
  and every leaf that is not scored, as a Python True).

  With ``passive_weight_decay`` (`gsm` with groups), the passive elements
  of the scored leaves that ``decayed`` leaves undecayed (biases, norm
  scales and shifts) get ``passive_weight_decay * w`` in place of their
  gradient, so that a passive group decays to zero as a whole."""
  ratio = pattern_lib.ratio_for(ratio, pattern)
  ratio_lib.validate_ratio(ratio)
  structure = structure_lib.resolve(groups, prunable, method, budget, score,
                                    pattern=pattern)
  checks.check_number('score_decay', 0.0 if score_decay is None else
                      score_decay, 0.0, 1.0, "the decay of the gradient's "
                      'average, e.g. 0.99', schedule=True)

  def init_fn(params):
    prunable_lib.check_float_params(params, 'keep_top_taylor')
    structure.check(params, ratio)
    leaves = jax.tree.leaves(params)
    scored = structure.scored_leaves(params)
    state = KeepTopTaylorState(threshold=jnp.zeros((), jnp.float32),
                               num_active=jnp.zeros((), jnp.int32))
    if track_churn:
      state = state._replace(
          num_entered=jnp.zeros((), jnp.int32),
          active=tuple(jnp.zeros(s, bool)
                       for s in structure.unit_shapes(params)))
    if score_decay is not None:
      state = state._replace(
          score_trace=tuple(jnp.zeros_like(leaves[i]) for i in scored),
          count=jnp.zeros((), jnp.int32))
    return state

  def select(updates, state, params):
    if params is None:
      raise ValueError(
          'keep_top_taylor needs the parameters to score |g * w|: call '
          '`tx.update(grads, state, params)` (flax.nnx.Optimizer does this).')
    prunable_lib.check_float_params(params, 'keep_top_taylor')
    param_leaves, treedef = jax.tree.flatten(params)
    update_leaves = _match_updates(updates, treedef, param_leaves)
    scored = structure.scored_leaves(params)
    chosen = [i for i in scored if update_leaves[i] is not None]
    slot = {i: k for k, i in enumerate(scored)}  # index into score_trace
    new_state = state
    values = {i: update_leaves[i] for i in chosen}
    if score_decay is not None:
      d = score_decay(state.count) if callable(score_decay) else score_decay
      trace = list(state.score_trace)
      for i in chosen:
        m, g = trace[slot[i]], update_leaves[i]
        trace[slot[i]] = (d * m + (1 - d) * g).astype(m.dtype)
      values = {i: trace[slot[i]] for i in chosen}
      new_state = new_state._replace(score_trace=tuple(trace),
                                     count=optax.safe_increment(state.count))
    # The search starts from the last step's threshold: it moves little
    # from step to step, and starting there saves a pass computing the mean.
    top = structure.choose(values, params, ratio, 'taylor',
                           guess=state.threshold)
    undecayed = _undecayed(params, decayed) if passive_weight_decay else ()
    for i in chosen:
      g, keep = update_leaves[i], top.masks[i]
      passive = jnp.zeros((), g.dtype)
      if i in undecayed:
        passive = (passive_weight_decay * param_leaves[i]).astype(g.dtype)
      update_leaves[i] = jnp.where(keep, g, passive)
    if track_churn:
      entered = jnp.zeros((), jnp.int32)
      active = []
      for key, last in zip(structure.unit_keys(params), state.active):
        now = top.units.get(key, last)
        entered += jnp.sum(now & ~last, dtype=jnp.int32)
        active.append(now)
      new_state = new_state._replace(num_entered=entered,
                                     active=tuple(active))
    new_state = new_state._replace(threshold=top.threshold,
                                   num_active=top.num_active)
    leaf_masks = [True] * len(param_leaves)
    for i in chosen:
      leaf_masks[i] = top.masks[i]
    return (jax.tree.unflatten(treedef, update_leaves), new_state,
            jax.tree.unflatten(treedef, leaf_masks))


  return init_fn, select


def _undecayed(params, decayed):
  """Indices of the leaves that the weight decay mask ``decayed`` leaves
  out."""
  flags = prunable_lib.resolve_prunable(params, decayed, require_any=False)
  return {i for i, f in enumerate(flags) if not f}


def _match_updates(updates, treedef, param_leaves) -> list[Any]:
  """Flattens ``updates`` like the params; None leaves pass through."""
  try:
    update_leaves = treedef.flatten_up_to(updates)
  except (ValueError, TypeError) as e:
    raise ValueError(
        'The updates (gradients) must have the structure of `params`; got '
        f'{jax.tree.structure(updates)} for params {treedef}.') from e
  for g, w in zip(update_leaves, param_leaves):
    if g is not None and g.shape != w.shape:
      raise ValueError(
          f'An update of shape {g.shape} was given for a parameter of shape '
          f'{w.shape}; gradients and `params` must have the same shapes.')
  return update_leaves


def find_mask_state(opt_state: Any) -> Optional[KeepTopTaylorState]:
  """The `KeepTopTaylorState` inside any optax state, or None if none.

  Finds GSM's mask statistics (threshold, active count) however the
  optimizer is wrapped: plain `gsm` (``state[0]``),
  `optax.inject_hyperparams` (``.inner_state``), `optax.MultiSteps`
  (``.inner_opt_state``), `optax.apply_if_finite`, `optax.chain`, or a
  Flax ``nnx.Optimizer``'s ``opt_state``. The first one found, in
  `jax.tree.leaves` order, is returned.

  Args:
    opt_state: an optax optimizer state (any pytree).

  Returns:
    The `KeepTopTaylorState`, or None when the state holds none (e.g. a
    dense phase's plain SGD).

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from gsm_optax import gsm, find_mask_state
    >>> tx = optax.MultiSteps(gsm(learning_rate=0.1, ratio=2.0), 2)
    >>> state = tx.init({'w': jnp.ones((2, 2))})
    >>> int(find_mask_state(state).num_active)
    0
  """
  is_mask = lambda s: isinstance(s, KeepTopTaylorState)
  return next((s for s in jax.tree.leaves(opt_state, is_leaf=is_mask)
               if is_mask(s)), None)
