"""Which leaves GSM ranks, and how many of their weights it keeps."""

from typing import Any, Callable, Union

import jax
import numpy as np

PrunableSpec = Union[None, Any, Callable[[Any], Any]]


def default_prunable(params: Any) -> Any:
  """Marks the kernels as prunable: every array with ``ndim >= 2`` that is
  not a bias.

  A bias is never ranked, whatever its shape: a leaf whose name (the last
  key of its path, e.g. ``['query']['bias']``) contains ``bias`` is left
  out (the official code excludes every name with "bias" from weight
  decay; its biases are 1-D, so it never ranks them). So the
  ``(heads, head_dim)`` biases of ``nnx.MultiHeadAttention`` are not ranked,
  while its 3-D kernels are. Norm scales and shifts are 1-D and never
  ranked. Embedding tables are 2-D kernels and *are* ranked, as the
  official code ranks every 2-D parameter (the FAQ has a ``prunable`` rule
  that keeps them dense).

  Args:
    params: a pytree of arrays (nested dicts, an ``nnx.State``, an Equinox
      module filtered to its arrays).

  Returns:
    A pytree of bools with the structure of ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> from gsm_optax import default_prunable
    >>> default_prunable({'w': jnp.ones((3, 2)), 'b': jnp.ones(2),
    ...                   'attention': {'bias': jnp.ones((4, 8))}})
    {'attention': {'bias': False}, 'b': False, 'w': True}
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, x: bool(np.ndim(x) >= 2 and not is_bias(path)), params)


def leaf_name(path) -> str:
  """The name of a leaf: the last key of its path that is a name.

  Flax NNX's variables add an attribute ``.value`` below the name
  (``['fc1']['bias'].value``): that one is skipped.
  """
  names = []
  for entry in path:
    if isinstance(entry, jax.tree_util.DictKey):
      names.append(str(entry.key))
    elif isinstance(entry, jax.tree_util.GetAttrKey):
      if entry.name in ('value', 'raw_value') and names:
        continue
      names.append(entry.name)
  return names[-1] if names else ''


def is_bias(path) -> bool:
  """Whether the leaf at ``path`` is a bias, by its name."""
  return 'bias' in leaf_name(path).lower()


def resolve_prunable(params: Any, prunable: PrunableSpec,
                     require_any: bool = True) -> list[bool]:
  """Returns one bool per leaf of ``params`` (in ``jax.tree.leaves`` order).

  Raises:
    ValueError: ``prunable`` does not match the structure of ``params``, or
      (with ``require_any``) marks nothing as prunable.
  """
  check_array_leaves(params)
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
        'Pass `prunable=None` to rank every kernel (ndim >= 2, not a '
        'bias).') from e
  flags = [_leaf_flag(f, path) for f, path in zip(
      flags, _leaf_paths(params))]
  if require_any and not any(flags):
    raise ValueError(
        '`prunable` marks no parameter as prunable, so GSM has nothing to '
        'rank. Mark at least one kernel as prunable (the default, '
        '`prunable=None`, selects every leaf with ndim >= 2 that is not a '
        'bias).')
  return flags


def check_array_leaves(params: Any) -> None:
  """Raises a clear error for a leaf of ``params`` that is not an array.

  An Equinox module keeps its activation functions (and other static
  fields) as leaves; a function has no magnitude to rank or prune.
  """
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if not (hasattr(leaf, 'shape') and hasattr(leaf, 'dtype')) and not (
        isinstance(leaf, (int, float, complex)) and not isinstance(leaf, bool)):
      raise ValueError(
          f'`params` holds a {type(leaf).__name__} at '
          f'{jax.tree_util.keystr(path)}, not an array; pass the arrays '
          'alone. Equinox: `params, static = eqx.partition(model, '
          'eqx.is_array)`, then `eqx.combine(pruned, static)`. Flax NNX: '
          '`nnx.to_pure_dict(nnx.state(model, nnx.Param))`.')


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
  check_array_leaves(params)
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
