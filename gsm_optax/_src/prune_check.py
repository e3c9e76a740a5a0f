"""Before the final prune: how much of the kernels' norm it would remove, and
a warning when that is likely to cost accuracy."""

from typing import Any, NamedTuple, Optional
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from gsm_optax._src import prune as prune_lib
from gsm_optax._src.spec import prunable as prunable_lib
from gsm_optax._src.spec import structure as structure_lib


def pruned_norm_share(params: Any, ratio: float,
                      prunable: prunable_lib.PrunableSpec = None,
                      method: str = 'auto',
                      groups: Optional[Any] = None,
                      budget: str = 'params') -> jax.Array:
  """The share of the prunable weights' norm that `prune` would remove now.

  ``||w outside the Q largest |w|||_2 / ||w||_2`` over all prunable leaves
  together (ties at the threshold kept, as `prune` keeps them). Logged
  during GSM training, it shows whether the passive weights have decayed
  enough for the final prune to cost little: it should fall towards 0. A
  large share late in training means the prune will remove weights the
  model still uses (train longer, raise the weight decay, or smooth the
  ranking, see `keep_top_taylor`). It can be jitted.

  Args:
    params: a pytree of arrays.
    ratio: the global compression ratio C >= 1 (the one `prune` will use).
    prunable: which leaves are ranked (see `keep_top_taylor`).
    method: selection route (see `prune`).
    groups, budget: structured pruning (see `prune`): the share of the
      norm of the groups' members that the prune would remove.

  Returns:
    A float32 scalar in [0, 1] (0 when all prunable weights are zero; NaN
    if a weight is not finite).

  Example:
    >>> import jax.numpy as jnp
    >>> from gsm_optax import pruned_norm_share
    >>> w = {'w': jnp.array([[3., 0.], [0., 4.]])}
    >>> round(float(pruned_norm_share(w, ratio=4)), 6)  # removes the 3
    0.6
  """
  return prune_lib.compiled(_norm_share, params, ratio, prunable, method, groups,
                   budget)


def _norm_share(params, ratio, prunable, method, groups, budget):
  structure = structure_lib.resolve(groups, prunable, method, budget)
  all_leaves = jax.tree.leaves(params)
  chosen = structure.scored_leaves(params)
  top = structure.choose({}, params, ratio, 'magnitude')
  leaves = [all_leaves[i] for i in chosen]
  kept = [top.masks[i] for i in chosen]
  total = removed = jnp.zeros((), jnp.float32)
  for x, keep in zip(leaves, kept):
    sq = jnp.square(x.astype(jnp.float32))
    total += jnp.sum(sq)
    removed += jnp.sum(jnp.where(keep, 0.0, sq))
  share = jnp.where(total > 0, jnp.sqrt(removed / jnp.where(total > 0, total,
                                                            1.0)), 0.0)
  # A diverged model (NaN or inf weights) has no share to speak of: NaN,
  # which `check_final_prune` reports, never a 0 that says all is well.
  return jnp.where(jnp.isfinite(total), share, jnp.nan)


# `check_final_prune` warns above this share of the kernels' norm (how it
# was chosen: docs/faq.md, "The final prune costs a lot of accuracy").
DEFAULT_PRUNE_TOLERANCE = 0.02


class PruneCostWarning(UserWarning):
  """The final prune would remove weights that still carry the function."""


class PruneCheck(NamedTuple):
  """What `check_final_prune` found: the share of the kernels' norm that
  `prune` would remove now, and a warning message if that is too much."""
  share: float
  message: Optional[str]

  @property
  def ok(self) -> bool:
    return self.message is None


def check_final_prune(params: Any, ratio: float,
                      tolerance: float = DEFAULT_PRUNE_TOLERANCE,
                      prunable: prunable_lib.PrunableSpec = None,
                      method: str = 'auto',
                      warn: bool = True,
                      groups: Optional[Any] = None,
                      budget: str = 'params') -> PruneCheck:
  """Says, before you prune, whether the final prune would cost accuracy.

  GSM's prune needs no fine-tuning only when the weights outside the Q
  largest magnitudes have glided to (near) zero. This measures their share
  of the kernels' norm (`pruned_norm_share`); above ``tolerance`` it warns
  (`PruneCostWarning`) with the fixes, and its message goes into the
  returned `PruneCheck`. Call it every epoch, or at the end of training
  before `prune`.

  Args:
    params: the params now (a pytree of concrete arrays).
    ratio: the compression ratio `prune` will use.
    tolerance: the largest share of the norm taken as free (the default's
      calibration: docs, FAQ). The share is a proxy: the prune's cost in
      accuracy at one share differs between models, so judge by the pruned
      model's accuracy on held-out data too.
    prunable: which leaves are ranked (see `keep_top_taylor`).
    method: selection route (see `prune`).
    warn: issue the `PruneCostWarning` (else only return the message).
    groups, budget: structured pruning (see `prune`).

  Returns:
    A `PruneCheck` with the share and, if it is above ``tolerance``, the
    message.

  Example:
    >>> import jax.numpy as jnp
    >>> from gsm_optax import check_final_prune
    >>> check = check_final_prune({'w': jnp.array([[3., 0.], [0., 4.]])},
    ...                           ratio=4, warn=False)  # would remove the 3
    >>> round(check.share, 6), check.ok
    (0.6, False)
  """
  share = float(pruned_norm_share(params, ratio, prunable, method, groups,
                                  budget))
  if share <= tolerance:  # NaN (diverged) warns too
    return PruneCheck(share, None)
  if np.isnan(share):
    message = (
        'The kernels hold NaN or inf weights (training diverged?), so the '
        'final prune would keep garbage: lower the learning rate, or wrap '
        'the optimizer in `optax.apply_if_finite` to skip non-finite steps '
        '(docs: FAQ, "Training diverged at a low ratio").')
  else:
    message = (
        f'The final prune at {ratio:g}x would remove {share:.1%} of the '
        f"kernels' norm (more than {tolerance:.1%}): the passive weights "
        'have not glided to zero, so pruning now costs accuracy. Smooth the '
        'ranking (`gsm(..., score_decay=0.9)`) so the same weights stay '
        'passive, and/or decay the passive weights on their own '
        '(`passive_decay=1e-3`, whatever the learning rate), or train '
        'longer or with more weight decay (docs: FAQ, "The final prune '
        'costs a lot of accuracy").')
  if warn:
    warnings.warn(message, PruneCostWarning, stacklevel=2)
  return PruneCheck(share, message)
