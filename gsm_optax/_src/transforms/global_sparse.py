"""`global_sparse`: GSM's mask around any optimizer, with passive decay."""

from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from gsm_optax._src import checks
from gsm_optax._src.spec import prunable as prunable_lib
from gsm_optax._src.transforms import mask as mask_lib


def global_sparse(optimizer: optax.GradientTransformation,
                  ratio: Optional[float] = None,
                  passive_decay: Union[None, float, optax.Schedule] = None,
                  prunable: prunable_lib.PrunableSpec = None,
                  method: str = 'auto',
                  score_decay: Union[None, float, optax.Schedule] = None,
                  track_churn: bool = False,
                  groups: Optional[Any] = None,
                  budget: str = 'params',
                  score: str = 'group_taylor',
                  pattern: Any = None
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
    groups, budget, score: structured GSM (see `keep_top_taylor`): the
      mask keeps whole groups, and ``passive_decay`` shrinks every slice of
      a passive group (its biases and norm entries too).
    pattern: None, or an N:M pattern (`NM` or ``'2:4'``): the active set
      is the N best of every block of M (see `keep_top_taylor`).

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
  return wrap(optimizer, mask_lib.taylor_mask(
      ratio, prunable, method, score_decay, track_churn, groups, budget,
      score, pattern=pattern), passive_decay)


def wrap(optimizer: optax.GradientTransformation, mask,
         passive_decay) -> optax.GradientTransformation:
  """`global_sparse` around a `mask_lib.taylor_mask` pair."""
  checks.check_number('passive_decay', 0.0 if passive_decay is None else
                      passive_decay, 0.0, 1.0, 'the share of a passive weight '
                      'removed each step, e.g. 1e-3', schedule=True)
  mask_init, select = mask

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
  mask: mask_lib.KeepTopTaylorState
  inner: Any
  count: jax.Array
