"""Recipes that reproduce the official code's choices where gsm_optax differs.

The training step is the same in both (tested to 1e-16 in float64). Three
choices around it differ, and each has a recipe here:

* which leaves are ranked: the official code ranks tensors of dimension 2
  or 4 (`official_prunable`); gsm_optax's default ranks every leaf with
  ``ndim >= 2``, so 3-D (Conv1d) and 5-D (Conv3d) kernels too;
* which leaves are decayed: the official code decays every parameter whose
  name contains none of "bias", "bn", "BN" (`official_weight_decay_mask`);
  gsm_optax's default decays the ranked leaves, so a norm scale named
  otherwise (``LayerNorm_0/scale``) is decayed there and not here;
* how many weights the final prune keeps: ``gsm_optax.prune(...,
  count='official')`` keeps ``N - int(N * (1 - 1/C))`` as the official
  ``get_mask_by_magnitude`` does, one more than ``floor(N / C)`` when C
  does not divide N.
"""

from typing import Any

import jax
import numpy as np

_NO_DECAY_NAMES = ('bias', 'bn', 'BN')


def official_prunable(params: Any) -> Any:
  """Marks the leaves the official code ranks: arrays of dimension 2 or 4.

  Args:
    params: a pytree of arrays.

  Returns:
    A pytree of bools with the structure of ``params``, for the
    ``prunable`` argument of `gsm`, `keep_top_taylor` and `prune`.

  Example:
    >>> import jax.numpy as jnp
    >>> from gsm_optax import official_prunable
    >>> official_prunable({'conv1d': jnp.ones((3, 4, 8)), 'w': jnp.ones((4, 8))})
    {'conv1d': False, 'w': True}
  """
  return jax.tree.map(lambda x: np.ndim(x) in (2, 4), params)


def official_weight_decay_mask(params: Any) -> Any:
  """Marks the leaves the official code decays: names without "bias"/"bn".

  The official ``sgd_optimizer`` gives every parameter whose name contains
  "bias", "bn" or "BN" its ``weight_decay_bias`` (0 by default) and the
  others the weight decay. Here the name is the leaf's path, as
  `jax.tree_util.keystr` writes it.

  Args:
    params: a pytree of arrays.

  Returns:
    A pytree of bools with the structure of ``params``, for the
    ``weight_decay_mask`` argument of `gsm`.

  Example:
    >>> import jax.numpy as jnp
    >>> from gsm_optax import official_weight_decay_mask
    >>> official_weight_decay_mask({'bn1': {'scale': jnp.ones(2)},
    ...                             'ln': {'scale': jnp.ones(2)}})
    {'bn1': {'scale': False}, 'ln': {'scale': True}}
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: not any(name in jax.tree_util.keystr(path)
                              for name in _NO_DECAY_NAMES), params)


def official_num_to_keep(num_prunable: int, ratio: float) -> int:
  """The official final prune's count: ``N - int(N * (1 - 1/C))``.

  Computed in float64 as ``get_mask_by_magnitude`` computes it, with its
  ``nonzero_ratio`` = 1 / C. It is ``ceil(N / C)`` when C does not divide N
  (up to float64 rounding), one more than the training step's
  ``floor(N / C)``.
  """
  return num_prunable - int(num_prunable * (1 - 1 / float(ratio)))
