"""The global Taylor mask: GSM's one new idea, as an Optax transformation."""

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from gsm_optax._src import keys
from gsm_optax._src import prunable as prunable_lib
from gsm_optax._src import ratio as ratio_lib
from gsm_optax._src import search


class KeepTopTaylorState(NamedTuple):
  """Threshold and number of active weights of the last step (for logging;
  the next step's search starts from the threshold)."""
  threshold: jax.Array  # float32 scalar: the Q-th largest |g * w|
  num_active: jax.Array  # int32 scalar: weights whose gradient passed (>= Q)


def keep_top_taylor(ratio: float,
                    prunable: prunable_lib.PrunableSpec = None,
                    method: str = 'interpolate') -> optax.GradientTransformation:
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
  ratio_lib.validate_ratio(ratio)
  if method not in search.METHODS:
    raise ValueError(f'`method` must be one of {search.METHODS}; '
                     f'got {method!r}.')

  def init_fn(params):
    prunable_lib.check_float_params(params, 'keep_top_taylor')
    flags = prunable_lib.resolve_prunable(params, prunable)
    leaves = jax.tree.leaves(params)
    ratio_lib.num_to_keep(_num_prunable(leaves, flags), ratio)
    return KeepTopTaylorState(threshold=jnp.zeros((), jnp.float32),
                              num_active=jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(
          'keep_top_taylor needs the parameters to score |g * w|: call '
          '`tx.update(grads, state, params)` (flax.nnx.Optimizer does this).')
    prunable_lib.check_float_params(params, 'keep_top_taylor')
    flags = prunable_lib.resolve_prunable(params, prunable)
    param_leaves, treedef = jax.tree.flatten(params)
    update_leaves = _match_updates(updates, treedef, param_leaves)
    chosen = [i for i, f in enumerate(flags)
              if f and update_leaves[i] is not None]
    q = ratio_lib.num_to_keep(
        sum(param_leaves[i].size for i in chosen), ratio)
    scores = keys.taylor_scores([update_leaves[i] for i in chosen],
                                  [param_leaves[i] for i in chosen])
    # The search starts from the last step's threshold: it moves little
    # from step to step, and starting there saves a pass computing the mean.
    top = search.select_top_q(scores, q, method, guess=state.threshold)
    for i, keep in zip(chosen, keys.at_least(scores, top.mask_key)):
      g = update_leaves[i]
      update_leaves[i] = jnp.where(keep, g, jnp.zeros((), g.dtype))
    threshold = keys.key_to_score(top.threshold_key,
                                    scores[0].dtype).astype(jnp.float32)
    new_state = KeepTopTaylorState(threshold=threshold,
                                   num_active=top.num_active.astype(jnp.int32))
    return jax.tree.unflatten(treedef, update_leaves), new_state

  return optax.GradientTransformation(init_fn, update_fn)


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
