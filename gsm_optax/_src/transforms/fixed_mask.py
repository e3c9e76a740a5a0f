"""A fixed sparsity mask on the updates: lottery tickets and fine-tuning."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class FixedMaskState(NamedTuple):
  """Stateless: the mask lives in the closure."""


def fixed_mask(masks: Any) -> optax.GradientTransformation:
  """Zeroes every update where ``masks`` is False; the rest pass unchanged.

  Chain it first, so that pruned weights (set to zero) get no loss gradient,
  no decay (decay of zero is zero) and no momentum, and stay zero. This is how
  a lottery ticket is retrained (Ding et al. 2019, Table 4) and how
  "magnitude pruning + fine-tuning" (Han et al. 2015) keeps its mask.

  Args:
    masks: a pytree of bool arrays like the params (e.g. from `prune`); a
      leaf may also be a Python bool for the whole array.

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp
    >>> from gsm_optax import fixed_mask
    >>> tx = fixed_mask({'w': jnp.array([True, False])})
    >>> tx.update({'w': jnp.array([1., 2.])}, tx.init(None))[0]['w'].tolist()
    [1.0, 0.0]
  """

  def init_fn(params):
    del params
    return FixedMaskState()

  def update_fn(updates, state, params=None):
    del params
    try:
      masked = jax.tree.map(
          lambda g, m: None if g is None else jnp.where(
              m, g, jnp.zeros((), g.dtype)),
          updates, masks, is_leaf=lambda g: g is None)
    except (ValueError, TypeError) as e:
      raise ValueError(
          '`masks` must have the structure of the updates (the params); got '
          f'{jax.tree.structure(masks)} for {jax.tree.structure(updates)}.'
      ) from e
    return masked, state

  return optax.GradientTransformation(init_fn, update_fn)
