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


def resolve_prunable(params: Any, prunable: PrunableSpec,
                     require_any: bool = True) -> list[bool]:
  """Returns one bool per leaf of ``params`` (in ``jax.tree.leaves`` order).

  Raises:
    ValueError: ``prunable`` does not match the structure of ``params``, or
      (with ``require_any``) marks nothing as prunable.
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
  flags = [_leaf_flag(f, path) for f, path in zip(
      flags, _leaf_paths(params))]
  if require_any and not any(flags):
    raise ValueError(
        '`prunable` marks no parameter as prunable, so GSM has nothing to '
        'rank. Mark at least one kernel as prunable (the default, '
        '`prunable=None`, selects every leaf with ndim >= 2).')
  return flags


def _leaf_flag(flag: Any, path: str) -> bool:
  """One leaf's flag as a bool, or a ValueError for a per-element mask."""
  if np.ndim(flag) != 0:
    raise ValueError(
        f'`prunable` gives an array of shape {np.shape(flag)} for {path}; it '
        'takes one bool per leaf (the whole array is ranked or not). To keep '
        'some weights of a leaf dense, split it into two parameters, or chain '
        '`gsm_optax.fixed_mask` to freeze an element-wise pattern.')
  return bool(flag)


def _leaf_paths(params: Any) -> list[str]:
  return [jax.tree_util.keystr(path) for path, _ in
          jax.tree_util.tree_flatten_with_path(params)[0]]


def check_float_params(params: Any, who: str) -> None:
  """Raises a clear error for a parameter that is not floating point.

  Optax's chains add float updates to every leaf: an integer leaf would be
  truncated by `optax.apply_updates` and a ``float0`` gradient (from
  ``jax.grad(..., allow_int=True)``) breaks momentum.
  """
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    dtype = getattr(leaf, 'dtype', None)
    if dtype is None or not jax.numpy.issubdtype(dtype, jax.numpy.inexact):
      raise ValueError(
          f'{who} trains floating-point parameters only; '
          f'{jax.tree_util.keystr(path)} has dtype {dtype}. Give the optimizer '
          'only the trainable float leaves (with Flax NNX: '
          '`nnx.Optimizer(model, tx, wrt=nnx.Param)`; with optax: '
          '`optax.partition` or `optax.masked` around it), and keep integer '
          'state such as step counters out of the params.')
