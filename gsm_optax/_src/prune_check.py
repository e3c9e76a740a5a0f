"""Before the final prune: how much of the kernels' norm it would remove, and
a warning when that is likely to cost accuracy."""

from typing import Any, Callable, NamedTuple, Optional
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
  return _share([all_leaves[i] for i in chosen], [top.masks[i] for i in chosen])


def _share(leaves, kept):
  """The share of the norm of ``leaves`` outside the masks ``kept``."""
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


_share_jit = jax.jit(_share)


# `check_final_prune` warns above this share of the kernels' norm (how it
# was chosen: docs/faq.md, "The final prune costs a lot of accuracy").
DEFAULT_PRUNE_TOLERANCE = 0.02


class PruneCostWarning(UserWarning):
  """The final prune would remove weights that still carry the function."""


# With ``fn`` and ``inputs``, `check_final_prune` warns when the prune
# changes more than this share of the predictions (or, for outputs that
# are not class scores, moves them by more than this share of their norm).
DEFAULT_OUTPUT_TOLERANCE = 0.01


class PruneCheck(NamedTuple):
  """What `check_final_prune` found: the share of the kernels' norm that
  `prune` would remove now; with ``fn`` and ``inputs``, the share of the
  predictions it would change (``changed``) and the relative change of the
  outputs (``output_change``); and a warning message if that is too much."""
  share: float
  message: Optional[str]
  changed: Optional[float] = None
  output_change: Optional[float] = None

  @property
  def ok(self) -> bool:
    return self.message is None


def check_final_prune(params: Any, ratio: float,
                      tolerance: float = DEFAULT_PRUNE_TOLERANCE,
                      prunable: prunable_lib.PrunableSpec = None,
                      method: str = 'auto',
                      warn: bool = True,
                      groups: Optional[Any] = None,
                      budget: str = 'params',
                      fn: Optional[Callable[..., Any]] = None,
                      inputs: Any = None,
                      output_tolerance: float = DEFAULT_OUTPUT_TOLERANCE
                      ) -> PruneCheck:
  """Says, before you prune, whether the final prune would cost accuracy.

  GSM's prune needs no fine-tuning only when the weights outside the Q
  largest magnitudes have glided to (near) zero. Given the model
  (``fn(params, inputs)``) and held-out ``inputs``, it judges by what the
  prune does to the outputs: it warns (`PruneCostWarning`) when the pruned
  model changes more than ``output_tolerance`` of the predictions (the
  argmax of the last axis, for outputs with more than one class), or moves
  other outputs by more than that share of their norm. Without them it
  falls back on a proxy, the share of the kernels' norm the prune removes
  (`pruned_norm_share`), against ``tolerance``; the same share costs
  different models different accuracy, so pass ``fn`` and ``inputs`` where
  you can. The message goes into the returned `PruneCheck`. Call it at the
  end of training, before `prune`.

  Args:
    params: the params now (a pytree of concrete arrays).
    ratio: the compression ratio `prune` will use.
    tolerance: without ``fn``: the largest share of the norm taken as free
      (the default's calibration: docs, FAQ).
    prunable: which leaves are ranked (see `keep_top_taylor`).
    method: selection route (see `prune`).
    warn: issue the `PruneCostWarning` (else only return the message).
    groups, budget: structured pruning (see `prune`).
    fn: the model, ``fn(params, inputs)`` (e.g. ``lambda p, x:
      nnx.merge(graphdef, p)(x)``), to judge by its outputs.
    inputs: held-out inputs for ``fn`` (a few thousand examples).
    output_tolerance: with ``fn``: the largest share of the predictions the
      prune may change (or relative change of other outputs).

  Returns:
    A `PruneCheck`: the share, with ``fn`` the predictions changed and the
    outputs' change, and the message if the prune would cost too much.

  Raises:
    ValueError: only one of ``fn`` and ``inputs`` is given.

  Example:
    >>> import jax.numpy as jnp
    >>> from gsm_optax import check_final_prune
    >>> w = {'w': jnp.array([[3., 0.], [0., 4.]])}
    >>> check = check_final_prune(w, ratio=4, warn=False)  # removes the 3
    >>> round(check.share, 6), check.ok
    (0.6, False)
    >>> x = jnp.array([[0., 1.], [0., 2.]])  # the 3 never reaches an output
    >>> check = check_final_prune(w, 4, fn=lambda p, x: x @ p['w'],
    ...                           inputs=x, warn=False)
    >>> check.changed, check.ok
    (0.0, True)
  """
  if (fn is None) != (inputs is None):
    raise ValueError(
        '`fn` and `inputs` go together: pass both (the model '
        '`fn(params, inputs)` and held-out inputs) to judge the prune by '
        'its outputs, or neither to judge it by the share of the norm.')
  changed = output_change = None
  if fn is None:
    share = float(pruned_norm_share(params, ratio, prunable, method, groups,
                                    budget))
  else:  # one selection: the share is read off the prune's masks
    pruned, share = _prune_and_share(params, ratio, prunable, method, groups,
                                     budget)
  if np.isnan(share):
    message = (
        'The kernels hold NaN or inf weights (training diverged?), so the '
        'final prune would keep garbage: lower the learning rate, or wrap '
        'the optimizer in `optax.apply_if_finite` to skip non-finite steps '
        '(docs: FAQ, "Training diverged at a low ratio").')
  elif fn is not None:
    before = np.asarray(fn(params, inputs), np.float64)
    after = np.asarray(fn(pruned, inputs), np.float64)
    output_change = float(np.linalg.norm(after - before) /
                          max(np.linalg.norm(before), 1e-30))
    if before.ndim >= 2 and before.shape[-1] > 1:
      changed = float(np.mean(np.argmax(before, -1) != np.argmax(after, -1)))
    cost = changed if changed is not None else output_change
    message = None if cost <= output_tolerance else (
        f'The final prune at {ratio:g}x would change '
        + (f'{changed:.1%} of the predictions' if changed is not None else
           f"the outputs by {output_change:.1%} of their norm")
        + f' on the inputs given (more than {output_tolerance:.1%}; it '
        f"removes {share:.1%} of the kernels' norm): the passive weights "
        'still carry the function, so pruning now costs accuracy. ' + _FIXES)
  elif share <= tolerance:
    message = None
  else:
    message = (
        f'The final prune at {ratio:g}x would remove {share:.1%} of the '
        f"kernels' norm (more than {tolerance:.1%}), which may cost "
        'accuracy: the share is a proxy, so check what the prune does to '
        'the outputs (`check_final_prune(..., fn=..., inputs=...)` with '
        'held-out inputs). ' + _FIXES)
  if message and warn:
    warnings.warn(message, PruneCostWarning, stacklevel=2)
  return PruneCheck(share, message, changed, output_change)


def _prune_and_share(params, ratio, prunable, method, groups, budget):
  """`prune`'s params and `pruned_norm_share` from its masks; (None, NaN)
  when a ranked weight is not finite (`prune` refuses those)."""
  chosen = structure_lib.resolve(groups, prunable, method,
                                 budget).scored_leaves(params)
  leaves = jax.tree.leaves(params)
  ranked = [leaves[i] for i in chosen]
  if int(prune_lib._count_not_finite(ranked)):  # pylint: disable=protected-access
    return None, np.nan
  pruned, masks = prune_lib.prune(params, ratio, prunable, method,
                                  groups=groups, budget=budget)
  masks = jax.tree.leaves(masks)
  return pruned, float(_share_jit(ranked, [masks[i] for i in chosen]))


_FIXES = (
    'If it does: smooth the ranking (`gsm(..., score_decay=0.9)`) so the '
    'same weights stay passive, decay the passive weights on their own '
    '(`passive_decay=1e-3`, whatever the learning rate), or train longer or '
    'with more weight decay (docs: FAQ, "The final prune costs a lot of '
    'accuracy").')
