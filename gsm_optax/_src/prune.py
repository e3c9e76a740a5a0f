"""Final global magnitude prune: keep the Q largest |w|, zero the rest."""

from typing import Any

import jax
import jax.numpy as jnp

from gsm_optax._src import prunable as prunable_lib
from gsm_optax._src import select


def prune(params: Any, ratio: float,
          prunable: prunable_lib.PrunableSpec = None,
          method: str = 'interpolate') -> tuple[Any, Any]:
  """Keeps the ``floor(N / ratio)`` largest-magnitude prunable weights.

  The ranking is global over all prunable leaves (ties kept), as in the
  official ``gsm_prune_pipeline.py``; non-prunable leaves are untouched.
  After GSM training the passive weights are already near zero, so this
  prune needs no fine-tuning.

  Args:
    params: a pytree of arrays.
    ratio: the global compression ratio C >= 1.
    prunable: which leaves are ranked (see `keep_top_taylor`).
    method: selection route, ``'interpolate'``, ``'bisect'`` or ``'top_k'``
      (same result).

  Raises:
    ValueError: if a prunable weight is NaN or infinite (training diverged;
      a NaN magnitude would rank first and be kept). Checked when the
      weights are concrete, not under `jax.jit`.

  Returns:
    ``(pruned_params, masks)``: masks is a pytree of bool arrays like
    ``params``, True where a weight is kept (all True on non-prunable leaves).

  Example:
    >>> import jax.numpy as jnp
    >>> from gsm_optax import prune
    >>> pruned, masks = prune({'w': jnp.array([[1., -4.], [3., 2.]])}, ratio=2)
    >>> pruned['w'].tolist()
    [[0.0, -4.0], [3.0, 0.0]]
  """
  flags = prunable_lib.resolve_prunable(params, prunable)
  leaves, treedef = jax.tree.flatten(params)
  chosen = [i for i, f in enumerate(flags) if f]
  q = prunable_lib.num_to_keep(sum(leaves[i].size for i in chosen), ratio)
  _check_finite([leaves[i] for i in chosen])
  magnitudes = select.magnitude_scores([leaves[i] for i in chosen])
  key, _ = select.global_threshold(magnitudes, q, method)
  masks = [jnp.ones(jnp.shape(x), bool) for x in leaves]
  for i, keep in zip(chosen, select.at_least(magnitudes, key)):
    masks[i] = keep
  pruned = [jnp.where(m, x, jnp.zeros((), x.dtype))
            for m, x in zip(masks, leaves)]
  return jax.tree.unflatten(treedef, pruned), jax.tree.unflatten(treedef, masks)


def _check_finite(leaves):
  if any(isinstance(x, jax.core.Tracer) for x in leaves):
    return
  bad = sum(int(jnp.sum(~jnp.isfinite(x))) for x in leaves)
  if bad:
    raise ValueError(
        f'`params` has {bad} NaN or infinite prunable weights, so there is '
        'no magnitude ranking to prune by: training diverged. Lower the '
        'learning rate, or wrap the optimizer in optax.apply_if_finite to '
        'skip non-finite steps.')
