"""Which leaves GSM ranks, and how many of their weights it keeps."""

from typing import Any, Callable, Union

import jax
import numpy as np

PrunableSpec = Union[None, Any, Callable[[Any], Any]]


def default_prunable(params: Any) -> Any:
  """Marks every array with ``ndim >= 2`` (dense and conv kernels) as prunable.

  This is the paper's choice: the official code ranks parameters whose
  dimension is 2 or 4; biases and normalisation scales are never pruned.

  Args:
    params: a pytree of arrays.

  Returns:
    A pytree of bools with the structure of ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> from gsm_optax import default_prunable
    >>> default_prunable({'w': jnp.ones((3, 2)), 'b': jnp.ones(2)})
    {'b': False, 'w': True}
  """
  return jax.tree.map(lambda x: np.ndim(x) >= 2, params)


def resolve_prunable(params: Any, prunable: PrunableSpec) -> list[bool]:
  """Returns one bool per leaf of ``params`` (in ``jax.tree.leaves`` order).

  Raises:
    ValueError: ``prunable`` does not match the structure of ``params``, or
      marks nothing as prunable.
  """
  if prunable is None:
    prunable = default_prunable
  tree = prunable(params) if callable(prunable) else prunable
  params_def = jax.tree.structure(params)
  try:
    flags = params_def.flatten_up_to(tree)
  except (ValueError, TypeError) as e:
    raise ValueError(
        '`prunable` must be a pytree of bools with the structure of the '
        'params (or a callable returning one); got structure '
        f'{jax.tree.structure(tree)} for params structure {params_def}. '
        'Pass `prunable=None` to rank every leaf with ndim >= 2.') from e
  flags = [bool(f) for f in flags]
  if not any(flags):
    raise ValueError(
        '`prunable` marks no parameter as prunable, so GSM has nothing to '
        'rank. Mark at least one kernel as prunable (the default, '
        '`prunable=None`, selects every leaf with ndim >= 2).')
  return flags


def validate_ratio(ratio: float) -> None:
  """Raises a clear error when a concrete compression ratio is below 1."""
  if isinstance(ratio, jax.core.Tracer) or callable(ratio):
    return
  if not np.all(np.isfinite(ratio)) or np.any(np.asarray(ratio) < 1):
    raise ValueError(
        f'`ratio` is the global compression ratio C >= 1 (keep N / C weights); '
        f'got {ratio}. Use e.g. ratio=10.0 to keep one weight in ten.')


def num_to_keep(num_prunable: int, ratio: Any) -> Any:
  """Q = floor(N / C), the number of weights GSM keeps active.

  Concrete ratios are checked here (Q must be at least 1); a traced ratio (for
  instance under `optax.inject_hyperparams`) gives a traced Q, clipped to
  [1, N] because an error cannot be raised inside `jit`. Float32 cannot
  resolve N / C exactly (about 1e-7 relative), so a relative slack of 2**-20
  makes an N / C that is an integer in exact arithmetic (say C = 1 / 0.2f)
  give that integer rather than one less.
  """
  if isinstance(ratio, jax.core.Tracer):
    q = jax.numpy.floor(num_prunable / ratio * (1 + 2**-20)).astype(
        jax.numpy.int32)
    return jax.numpy.clip(q, 1, num_prunable)
  validate_ratio(ratio)
  q = int(np.floor(num_prunable / np.float64(ratio)))
  if q < 1:
    raise ValueError(
        f'`ratio`={ratio} keeps floor({num_prunable} / {ratio}) = 0 of the '
        f'{num_prunable} prunable weights. Use ratio <= {num_prunable}.')
  return q
