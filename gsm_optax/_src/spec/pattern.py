"""N:M patterns: in every block of M consecutive weights along a kernel's
input (contracted) axis, N are kept: the layout of NVIDIA's sparse tensor
cores (2:4), as a value that `prune`, `gsm`, `global_sparse`,
`gradual_magnitude_pruning`, `one_shot_prune`, `sparsity_report` and
`save_sparse` read.

Within a block the N largest scores are kept; of equal scores the one at the
higher index is kept (the lower one is pruned first, as a stable ascending
sort of the scores prunes them). A NaN score ranks above +inf, as in every
selection of this library.
"""

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gsm_optax._src.selection import keys


class NM(NamedTuple):
  """An N:M pattern: N weights kept in every block of M along an axis.

  Attributes:
    n: weights kept in a block, ``1 <= n < m``.
    m: the block's length; it must divide the axis it runs along.
    axis: the input (contracted) axis of each kernel, where the blocks run:
      None (default) takes axis -2 of a 2-D kernel (Flax's ``(in, out)``)
      and of a 4-D convolution kernel (``(h, w, in, out)``) and asks for it
      on any other; an int for every kernel; or a pytree like the params
      (an int per ranked leaf), or a callable ``params -> pytree``.
      `one_shot_prune` reads the axes off the model's jaxpr instead.

  Example:
    >>> from gsm_optax import NM
    >>> NM(2, 4).ratio
    2.0
  """
  n: int
  m: int
  axis: Any = None

  @property
  def ratio(self) -> float:
    """The compression ratio the pattern keeps, ``m / n``."""
    return self.m / self.n

  def __str__(self) -> str:
    return f'{self.n}:{self.m}'


def parse(pattern: Any) -> NM | None:
  """``pattern`` (None, an `NM`, or a string ``'N:M'``) as an `NM`, checked.

  Raises:
    ValueError: not one of those forms, or not ``1 <= N < M``.
  """
  if pattern is None:
    return None
  if isinstance(pattern, str):
    match = re.fullmatch(r'\s*(\d+)\s*:\s*(\d+)\s*', pattern)
    if not match:
      raise ValueError(f"`pattern` must be 'N:M' (e.g. '2:4') or "
                       f'gsm_optax.NM(n, m); got {pattern!r}.')
    pattern = NM(int(match.group(1)), int(match.group(2)))
  if not isinstance(pattern, NM):
    raise ValueError(f"`pattern` must be 'N:M' (e.g. '2:4') or "
                     f'gsm_optax.NM(n, m); got {pattern!r}.')
  n, m = pattern.n, pattern.m
  if not (isinstance(n, (int, np.integer)) and isinstance(m, (int, np.integer))
          and 1 <= n < m):
    raise ValueError(f'`pattern` {n}:{m} must keep 1 <= N < M weights of '
                     'every block of M, e.g. 2:4 or 4:8.')
  return pattern


def ratio_for(ratio: Any, pattern: Any) -> Any:
  """The ratio to use: ``ratio``, or with a pattern its ``m / n``.

  Raises:
    ValueError: neither given, or a concrete ``ratio`` that is not the
      pattern's.
  """
  pattern = parse(pattern)
  if pattern is None:
    if ratio is None:
      raise ValueError('`ratio` must be a real number >= 1 (the compression '
                       'ratio C, e.g. 10.0); got None. It may be left out '
                       "only with a `pattern` such as '2:4', which sets it.")
    return ratio
  if ratio is not None and not isinstance(ratio, jax.core.Tracer) and (
      float(np.asarray(ratio)) != pattern.ratio):
    raise ValueError(
        f'`ratio`={ratio} does not match `pattern` {pattern}, which keeps '
        f'{pattern.n} of {pattern.m} (ratio {pattern.ratio:g}): leave '
        '`ratio` out with a pattern.')
  return pattern.ratio


def leaf_axes(params: Any, pattern: NM, chosen: list[int]) -> dict[int, int]:
  """The block axis of each leaf in ``chosen`` (indices into the leaves),
  non-negative, checked: it exists and ``m`` divides it.

  Raises:
    ValueError: naming the leaf's path and the fix.
  """
  out = {}
  for i, (name, shape, axis, why) in enumerate(_axes(params, pattern)):
    if i not in chosen:
      continue
    if why:
      raise ValueError(f'{name} has shape {shape}: {why}')
    out[i] = axis
  return out


def axes_or_none(params: Any, pattern: NM) -> list[Any]:
  """Per leaf, the block axis if the pattern applies to it, else None."""
  return [None if why else axis for _, _, axis, why in _axes(params, pattern)]


def _axes(params, pattern):
  """Per leaf: (path, shape, axis, why not) under ``pattern.axis``."""
  with_paths = jax.tree_util.tree_flatten_with_path(params)[0]
  spec = pattern.axis
  if callable(spec):
    spec = spec(params)
  if spec is not None and not isinstance(spec, (int, np.integer)):
    try:
      spec = jax.tree.structure(params).flatten_up_to(spec)
    except (ValueError, TypeError) as e:
      raise ValueError(
          '`NM.axis` must be None, an int, or a pytree of ints with the '
          f'structure of the params; got {pattern.axis!r}.') from e
  out = []
  for i, (path, leaf) in enumerate(with_paths):
    name = jax.tree_util.keystr(path)
    shape = tuple(np.shape(leaf))
    axis = spec[i] if isinstance(spec, list) else spec
    why = ''
    if axis is None:
      if len(shape) in (2, 4):
        axis = -2
      else:
        why = ('which of its axes is its input is not known from its shape '
               'alone (2-D and 4-D kernels use axis -2). Give it: `NM(n, m, '
               'axis=...)` with an int or a pytree of ints like the params, '
               'or leave the leaf out with `prunable`.')
    if not why and not -len(shape) <= axis < len(shape):
      why = f'`NM.axis`={axis} is not one of its axes.'
    if not why:
      axis %= len(shape)
      if shape[axis] % pattern.m:
        why = (f'{shape[axis]} inputs along axis {axis}, which blocks of '
               f'M={pattern.m} do not divide: choose an M that divides it, '
               'or leave the leaf out with `prunable`.')
    out.append((name, shape, axis, why))
  return out


def keep_in_blocks(scores: jax.Array, n: Any, m: int, axis: int) -> jax.Array:
  """True at the ``n`` largest scores of every block of ``m`` consecutive
  entries along ``axis`` (``n`` may be traced); of equal scores the one at
  the higher index is kept.

  Example:
    >>> import jax.numpy as jnp
    >>> from gsm_optax._src.spec.pattern import keep_in_blocks
    >>> keep_in_blocks(jnp.array([[3., 1., 2., 2.]]), 2, 4, 1).tolist()
    [[True, False, False, True]]
  """
  key = keys.score_keys([scores])[0]
  moved = jnp.moveaxis(key, axis, -1)
  blocks = moved.reshape(moved.shape[:-1] + (moved.shape[-1] // m, m))
  a, b = blocks[..., :, None], blocks[..., None, :]  # a: this, b: the others
  index = jnp.arange(m)
  earlier = index[None, :] < index[:, None]
  # How many of the block rank below this entry: a lower score, or an equal
  # score at a lower index.
  below = jnp.sum((b < a) | ((b == a) & earlier), axis=-1)
  keep = (below >= m - n).reshape(moved.shape)
  return jnp.moveaxis(keep, -1, axis)


def satisfies(x: Any, pattern: NM, axis: int) -> bool:
  """Whether a concrete array has at most ``n`` non-zero bit patterns in
  every block (a ``-0.0`` counts as stored)."""
  x = np.asarray(x)
  if x.shape[axis] % pattern.m:
    return False
  nonzero = _bits(x) != 0
  moved = np.moveaxis(nonzero, axis, -1)
  blocks = moved.reshape(moved.shape[:-1] + (-1, pattern.m))
  return bool((blocks.sum(-1) <= pattern.n).all())


def _bits(x: np.ndarray) -> np.ndarray:
  if x.dtype.kind == 'f' or x.dtype.name == 'bfloat16':
    return x.view(np.dtype(f'u{x.dtype.itemsize}'))
  return x
