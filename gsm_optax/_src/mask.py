"""The global Taylor mask: GSM's one new idea, as an Optax transformation."""

from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from gsm_optax._src import checks
from gsm_optax._src import keys
from gsm_optax._src import prunable as prunable_lib
from gsm_optax._src import ratio as ratio_lib
from gsm_optax._src import search


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


def keep_top_taylor(ratio: float,
                    prunable: prunable_lib.PrunableSpec = None,
                    method: str = 'interpolate',
                    score_decay: Union[None, float, optax.Schedule] = None,
                    track_churn: bool = False
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
    method: ``'interpolate'`` (default) or ``'bisect'`` (sort-free counting
      searches: no concatenation, traced Q), or ``'top_k'``
      (``jax.lax.top_k`` on all scores). The masks are identical; see
      `global_threshold`.
    score_decay: None (default: the paper's ``|g * w|``), or the decay
      ``d`` in ``[0, 1)`` of the gradient's exponential average that the
      score ranks instead, a float or an optax schedule of the step count.
    track_churn: also keep the last step's mask (one bool per prunable
      weight) and report ``num_entered``, how many weights entered the
      active set at this step.

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
  init_fn, select = _taylor_mask(ratio, prunable, method, score_decay,
                                 track_churn)

  def update_fn(updates, state, params=None):
    masked, state, _ = select(updates, state, params)
    return masked, state

  return optax.GradientTransformation(init_fn, update_fn)


def _taylor_mask(ratio, prunable, method, score_decay, track_churn):
  """`keep_top_taylor`'s ``init`` and ``select``: ``select(updates, state,
  params)`` returns the masked updates, the new state, and one mask per
  leaf of the params (True where the gradient passes: the active weights,
  and every leaf that is not ranked, as a Python True)."""
  ratio_lib.validate_ratio(ratio)
  if method not in search.METHODS:
    raise ValueError(f'`method` must be one of {search.METHODS}; '
                     f'got {method!r}.')
  checks.check_number('score_decay', 0.0 if score_decay is None else
                      score_decay, 0.0, 1.0, "the decay of the gradient's "
                      'average, e.g. 0.99', schedule=True)

  def init_fn(params):
    prunable_lib.check_float_params(params, 'keep_top_taylor')
    flags = prunable_lib.resolve_prunable(params, prunable)
    leaves = jax.tree.leaves(params)
    ratio_lib.num_to_keep(_num_prunable(leaves, flags), ratio)
    ranked = [x for x, f in zip(leaves, flags) if f]
    state = KeepTopTaylorState(threshold=jnp.zeros((), jnp.float32),
                               num_active=jnp.zeros((), jnp.int32))
    if track_churn:
      state = state._replace(
          num_entered=jnp.zeros((), jnp.int32),
          active=tuple(jnp.zeros(jnp.shape(x), bool) for x in ranked))
    if score_decay is not None:
      state = state._replace(
          score_trace=tuple(jnp.zeros_like(x) for x in ranked),
          count=jnp.zeros((), jnp.int32))
    return state

  def select(updates, state, params):
    if params is None:
      raise ValueError(
          'keep_top_taylor needs the parameters to score |g * w|: call '
          '`tx.update(grads, state, params)` (flax.nnx.Optimizer does this).')
    prunable_lib.check_float_params(params, 'keep_top_taylor')
    flags = prunable_lib.resolve_prunable(params, prunable)
    param_leaves, treedef = jax.tree.flatten(params)
    update_leaves = _match_updates(updates, treedef, param_leaves)
    ranked = [i for i, f in enumerate(flags) if f]
    chosen = [i for i in ranked if update_leaves[i] is not None]
    slot = {i: k for k, i in enumerate(ranked)}  # index into the state's tuples
    q = ratio_lib.num_to_keep(
        sum(param_leaves[i].size for i in chosen), ratio)
    new_state = state
    ranked_updates = [update_leaves[i] for i in chosen]
    if score_decay is not None:
      d = score_decay(state.count) if callable(score_decay) else score_decay
      trace = list(state.score_trace)
      for i in chosen:
        m, g = trace[slot[i]], update_leaves[i]
        trace[slot[i]] = (d * m + (1 - d) * g).astype(m.dtype)
      ranked_updates = [trace[slot[i]] for i in chosen]
      new_state = new_state._replace(score_trace=tuple(trace),
                                     count=optax.safe_increment(state.count))
    scores = keys.taylor_scores(ranked_updates,
                                [param_leaves[i] for i in chosen])
    # The search starts from the last step's threshold: it moves little
    # from step to step, and starting there saves a pass computing the mean.
    top = search.select_top_q(scores, q, method, guess=state.threshold)
    masks = keys.at_least(scores, top.mask_key)
    for i, keep in zip(chosen, masks):
      g = update_leaves[i]
      update_leaves[i] = jnp.where(keep, g, jnp.zeros((), g.dtype))
    if track_churn:
      active = list(state.active)
      entered = jnp.zeros((), jnp.int32)
      for i, keep in zip(chosen, masks):
        entered += jnp.sum(keep & ~active[slot[i]], dtype=jnp.int32)
        active[slot[i]] = keep
      new_state = new_state._replace(num_entered=entered,
                                     active=tuple(active))
    threshold = keys.key_to_score(top.threshold_key,
                                    scores[0].dtype).astype(jnp.float32)
    new_state = new_state._replace(
        threshold=threshold, num_active=top.num_active.astype(jnp.int32))
    leaf_masks = [True] * len(param_leaves)
    for i, keep in zip(chosen, masks):
      leaf_masks[i] = keep
    return (jax.tree.unflatten(treedef, update_leaves), new_state,
            jax.tree.unflatten(treedef, leaf_masks))

  return init_fn, select


def global_sparse(optimizer: optax.GradientTransformation,
                  ratio: float,
                  passive_decay: Union[None, float, optax.Schedule] = None,
                  prunable: prunable_lib.PrunableSpec = None,
                  method: str = 'interpolate',
                  score_decay: Union[None, float, optax.Schedule] = None,
                  track_churn: bool = False
                  ) -> optax.GradientTransformation:
  r"""GSM's global mask around any optimizer, with decay of the passive weights.

  Every step, the gradient reaches only the Q weights with the largest
  Taylor score (`keep_top_taylor`); ``optimizer`` (e.g. `optax.adamw`) then
  turns the masked gradient into its update; and every passive prunable
  weight ``w`` (one whose gradient the mask removed this step) is moved
  further by ``-passive_decay * w``:

  .. math::
    u = \text{optimizer}(B \odot g), \qquad
    w \leftarrow w + u - \rho_t (1 - B) \odot w

  With `gsm`'s momentum SGD a passive weight shrinks by about
  ``alpha * lambda / (1 - beta)`` a step, which falls with the learning
  rate: a weight that leaves the active set after the last drop of the
  learning rate barely shrinks before the final prune. And after an
  adaptive optimizer (Adam, AdamW), which the paper's decay does not reach
  at all, a passive weight with no gradient shrinks only by AdamW's
  ``lr * weight_decay``. ``passive_decay`` ``rho`` shrinks it by a factor
  ``1 - rho`` a step whatever the optimizer and the learning rate: after
  ``k`` passive steps it is ``(1 - rho)**k`` of its size, so ``rho = 10 /
  k`` takes a weight that is passive for the last ``k`` steps to about
  ``e**-10``, and the final prune then removes almost nothing. Active
  weights are not touched by it.

  Args:
    optimizer: any optax transformation, applied to the masked gradient
      (it may use ``params``).
    ratio: the global compression ratio C >= 1 (see `keep_top_taylor`).
    passive_decay: None or 0 (no extra decay), a float ``rho`` in [0, 1),
      or an optax schedule of the step count.
    prunable: which leaves are ranked (see `keep_top_taylor`).
    method: selection route (see `keep_top_taylor`).
    score_decay: the smoothed ranking's decay (see `keep_top_taylor`).
    track_churn: report the weights entering the active set (see
      `keep_top_taylor`).

  Returns:
    An `optax.GradientTransformation` whose state is a `GlobalSparseState`;
    ``update`` needs ``params``. `find_mask_state` finds the mask's
    statistics in it.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from gsm_optax import global_sparse
    >>> params = {'w': jnp.array([[1., 2.], [3., 4.]])}
    >>> tx = global_sparse(optax.sgd(0.5), ratio=2.0, passive_decay=0.5)
    >>> grads = {'w': jnp.ones((2, 2))}
    >>> updates, state = tx.update(grads, tx.init(params), params)
    >>> optax.apply_updates(params, updates)['w'].tolist()  # 1 and 2 passive
    [[0.5, 1.0], [2.5, 3.5]]
    >>> tx = global_sparse(optax.adamw(1e-3), ratio=2.0, passive_decay=1e-3)

  References:
    Ding et al, `Global Sparse Momentum SGD for Pruning Very Deep Neural
    Networks <https://arxiv.org/abs/1909.12778>`_, 2019
  """
  checks.check_number('passive_decay', 0.0 if passive_decay is None else
                      passive_decay, 0.0, 1.0, 'the share of a passive weight '
                      'removed each step, e.g. 1e-3', schedule=True)
  mask_init, select = _taylor_mask(ratio, prunable, method, score_decay,
                                   track_churn)

  def init_fn(params):
    return GlobalSparseState(mask=mask_init(params),
                             inner=optimizer.init(params),
                             count=jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params=None):
    masked, mask_state, masks = select(updates, state.mask, params)
    inner_updates, inner_state = optimizer.update(masked, state.inner, params)
    if passive_decay is not None:
      rho = (passive_decay(state.count) if callable(passive_decay)
             else passive_decay)
      leaves, treedef = jax.tree.flatten(params)
      out = treedef.flatten_up_to(inner_updates)
      for i, (w, keep) in enumerate(zip(leaves, treedef.flatten_up_to(masks))):
        if keep is not True and out[i] is not None:  # a ranked leaf
          out[i] = out[i] - jnp.where(keep, 0, rho * w).astype(out[i].dtype)
      inner_updates = jax.tree.unflatten(treedef, out)
    return inner_updates, GlobalSparseState(
        mask=mask_state, inner=inner_state,
        count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


class GlobalSparseState(NamedTuple):
  """`global_sparse`'s state: the mask's, the optimizer's, a step count."""
  mask: KeepTopTaylorState
  inner: Any
  count: jax.Array


def _num_prunable(leaves, flags) -> int:
  return sum(leaf.size for leaf, f in zip(leaves, flags) if f)


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
