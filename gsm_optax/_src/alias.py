"""`gsm`: Global Sparse Momentum SGD as a chain of small transformations."""

from typing import Any, Optional, Union

import optax

from gsm_optax._src import checks
from gsm_optax._src.spec import prunable as prunable_lib
from gsm_optax._src.transforms import global_sparse as global_sparse_lib
from gsm_optax._src.transforms import mask


def gsm(learning_rate: optax.ScalarOrSchedule,
        ratio: Optional[float] = None,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        nesterov: bool = False,
        prunable: prunable_lib.PrunableSpec = None,
        weight_decay_mask: Optional[prunable_lib.PrunableSpec] = None,
        method: str = 'auto',
        score_decay: Union[None, float, optax.Schedule] = None,
        track_churn: bool = False,
        passive_decay: Union[None, float, optax.Schedule] = None,
        groups: Optional[Any] = None,
        budget: str = 'params',
        score: str = 'group_taylor',
        pattern: Any = None
        ) -> optax.GradientTransformation:
  r"""Global Sparse Momentum SGD (Ding et al., NeurIPS 2019).

  Only the Q = floor(N / ratio) prunable weights with the largest
  first-order Taylor score ``|g * w|`` (ranked across the whole model) get
  the loss gradient; every weight is decayed and carried by momentum, so
  the passive ones glide to zero:

  .. math::
    z \leftarrow \beta z + \lambda w + B \odot g, \qquad
    w \leftarrow w - \alpha z

  (Nesterov: ``w <- w - alpha (B*g + lambda*w + beta*z)``). This is the
  official code's ``train_one_step`` followed by ``torch.optim.SGD``, built as
  ``chain(keep_top_taylor, add_decayed_weights, trace,
  scale_by_learning_rate)``. After training, `prune` with the same ratio
  zeroes the passive weights.

  Differences from the official code, by default: every leaf with
  ``ndim >= 2`` is ranked (official: 2-D and 4-D only, see
  `official_prunable`), and the ranked leaves are the decayed ones
  (official: every name without "bias" or "bn", see
  `official_weight_decay_mask`). The step itself is the same.

  Args:
    learning_rate: a float or an optax schedule.
    ratio: the global compression ratio C >= 1.
    momentum: the momentum coefficient beta (paper: 0.98 to 0.99).
    weight_decay: lambda, applied to active and passive prunable weights.
    nesterov: whether to use Nesterov momentum.
    prunable: which leaves are ranked (see `keep_top_taylor`); default every
      leaf with ndim >= 2. Non-prunable leaves get their full gradient.
    weight_decay_mask: which leaves are decayed; default ``prunable``, so
      biases and norm scales get no decay (as in the official code).
    method: selection route, ``'auto'`` (default), ``'interpolate'``,
      ``'bisect'``, ``'radix'`` or ``'top_k'``; the same mask (see
      `global_threshold`).
    score_decay: None (default: the paper's rule) or the decay of an
      exponential average of the gradient whose ``|m * w|`` is ranked
      instead of ``|g * w|`` (a float or a schedule; see
      `keep_top_taylor`). Not in the paper.
    track_churn: keep the last mask and report how many weights entered
      the active set each step (``num_entered``; see `keep_top_taylor`).
    passive_decay: None (default: the paper's rule), or a further decay
      ``rho`` of the passive weights, ``w <- w - rho * w`` a step whatever
      the learning rate (a float or a schedule; see `global_sparse`, which
      then builds the optimizer). Not in the paper.
    groups: None (single weights), or a `Groups` from `find_groups`:
      structured GSM, which keeps whole channels, neurons and heads (see
      `keep_top_taylor`). Every slice of a passive group decays by
      ``weight_decay`` through momentum, its biases and norm entries too, so
      that it reaches zero as a whole and `slim` can remove it.
    budget: with ``groups``: ``ratio`` is a compression ratio in
      ``'params'``, ``'flops'`` or ``'latency'`` (see `Groups.with_latency`).
    score: with ``groups``: ``'group_taylor'`` or ``'weight_taylor'`` (see
      `keep_top_taylor`).
    pattern: None, or an N:M pattern (`NM` or ``'2:4'``): the active set
      is the N best of every block of M weights along a kernel's input
      axis (see `keep_top_taylor`); ``ratio`` is then ``M / N``.

  Returns:
    An `optax.GradientTransformation`; ``update`` needs ``params``.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from gsm_optax import gsm
    >>> params = {'w': jnp.ones((4, 4)), 'b': jnp.zeros(4)}
    >>> tx = gsm(learning_rate=0.1, ratio=4.0, momentum=0.9)
    >>> state = tx.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum((p['w'] @ jnp.arange(4.)) ** 2))(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)
    >>> int(state[0].num_active)
    4

  References:
    Ding et al, `Global Sparse Momentum SGD for Pruning Very Deep Neural
    Networks <https://arxiv.org/abs/1909.12778>`_, 2019
  """
  checks.check_number('momentum', momentum, 0.0, 1.0,
                      "e.g. 0.9, or 0.99 as the paper's LeNet runs")
  checks.check_number('weight_decay', weight_decay, 0.0, float('inf'),
                      "e.g. 5e-4, the paper's LeNet setting")
  checks.check_number('learning_rate', learning_rate, 0.0, float('inf'),
                      'e.g. 1e-2', schedule=True)
  if weight_decay_mask is None:
    weight_decay_mask = prunable if prunable is not None else (
        prunable_lib.default_prunable)
  momentum_sgd = (
      optax.add_decayed_weights(weight_decay, mask=weight_decay_mask),
      optax.trace(decay=momentum, nesterov=nesterov),
      optax.scale_by_learning_rate(learning_rate))
  taylor_mask = mask.taylor_mask(
      ratio, prunable, method, score_decay, track_churn, groups, budget,
      score, passive_weight_decay=weight_decay if groups is not None else 0.0,
      decayed=weight_decay_mask, pattern=pattern)
  if passive_decay is not None:
    return global_sparse_lib.wrap(optax.chain(*momentum_sgd), taylor_mask,
                                  passive_decay)
  return optax.chain(mask.as_transformation(taylor_mask), *momentum_sgd)

