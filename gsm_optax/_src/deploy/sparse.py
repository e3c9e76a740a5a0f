"""A pruned model as sparse kernels, and back to dense.

`to_sparse` turns each pruned kernel into a `SparseKernel`: the compressed
sparse rows (``jax.experimental.sparse.BCSR``) of its *transposed* 2-D view,
``(out, in)``, so that ``x @ W`` becomes ``(W.T @ x.T).T`` with the sparse
operand on the left, the product that BCSR computes fastest (measured
against BCOO, a gather-and-segment-sum product and a padded-row product; see
the docs' deploy page). A conv kernel
``(h, w, in, out)`` is viewed as ``(h * w * in, out)``.

`sparse_apply` (in its own module) runs a model with such kernels.
"""

import dataclasses
from typing import Any

import jax
from jax.experimental import sparse as jsparse
import jax.numpy as jnp
import numpy as np

from gsm_optax._src.spec import prunable as prunable_lib

# Kernels denser than this stay dense: a CSR entry costs its value and an
# index, so above about half density it is bigger than the dense array, and
# its product is slower long before that.
DEFAULT_MAX_DENSITY = 0.25


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class SparseKernel:
  """A kernel kept as CSR of its transposed 2-D view (see module docstring).

  Attributes:
    matrix: a ``jax.experimental.sparse.BCSR`` of shape ``(out, in)`` where
      ``out = shape[-1]`` and ``in = prod(shape[:-1])``.
    shape: the kernel's own shape.
  """
  matrix: jsparse.BCSR
  shape: tuple[int, ...]

  @property
  def dtype(self):
    return self.matrix.dtype

  @property
  def nnz(self) -> int:
    return int(self.matrix.nse)

  @property
  def size(self) -> int:
    return int(np.prod(self.shape))

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def todense(self) -> jax.Array:
    """The kernel as a dense array of its own shape."""
    return self.matrix.todense().T.reshape(self.shape)

  @classmethod
  def fromdense(cls, kernel) -> 'SparseKernel':
    """The sparse form of a concrete kernel (its zeros are dropped)."""
    kernel = np.asarray(kernel)
    if kernel.ndim < 2:
      raise ValueError(f'A SparseKernel needs ndim >= 2; got shape '
                       f'{kernel.shape}.')
    view = kernel.reshape(-1, kernel.shape[-1]).T  # (out, in)
    rows, cols = np.nonzero(view)  # row-major: the CSR order
    indptr = np.searchsorted(rows, np.arange(view.shape[0] + 1))
    matrix = jsparse.BCSR(
        (jnp.asarray(view[rows, cols]), jnp.asarray(cols, jnp.int32),
         jnp.asarray(indptr, jnp.int32)), shape=view.shape)
    return cls(matrix, tuple(kernel.shape))

  def tree_flatten(self):
    return (self.matrix,), self.shape

  @classmethod
  def tree_unflatten(cls, shape, children):
    return cls(children[0], shape)


def matmul_kernels(params: Any) -> Any:
  """Marks the leaves that `sparse_apply` runs as sparse products.

  These are the 2-D kernels that a model multiplies as ``x @ W`` (dense
  layers): every leaf with ``ndim == 2`` that is neither a bias nor an
  embedding table by its name (see `default_prunable`; an embedding is
  read by a lookup, which a sparse table would only slow down). Conv
  kernels and 3-D attention kernels are left dense: `sparse_apply` would
  make them dense again on every call. The default of `to_sparse`,
  `sparse_forward` and ``load_sparse(..., as_sparse=True)``.

  Args:
    params: a pytree of arrays.

  Returns:
    A pytree of bools with the structure of ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> from gsm_optax import matmul_kernels
    >>> matmul_kernels({'conv': jnp.ones((3, 3, 1, 4)), 'dense': jnp.ones((4, 2)),
    ...                 'embed': {'embedding': jnp.ones((9, 4))}})
    {'conv': False, 'dense': True, 'embed': {'embedding': False}}
  """
  def runs_sparse(path, x):
    return bool(np.ndim(x) == 2 and not prunable_lib.is_bias(path) and
                'embed' not in prunable_lib.leaf_name(path).lower())
  return jax.tree_util.tree_map_with_path(runs_sparse, params)


def is_sparse(leaf: Any) -> bool:
  return isinstance(leaf, SparseKernel)


def stores_sparse(leaf: Any, prunable: bool, max_density: float) -> bool:
  """Whether `to_sparse` (and so `save_sparse`) makes ``leaf`` sparse: a
  prunable, non-empty leaf with ``ndim >= 2`` and at most ``max_density``
  of it non-zero."""
  return bool(prunable and np.ndim(leaf) >= 2 and np.size(leaf) and
              np.count_nonzero(np.asarray(leaf)) <= max_density * np.size(leaf))


def to_sparse(params: Any, prunable: prunable_lib.PrunableSpec = None,
              max_density: float = DEFAULT_MAX_DENSITY) -> Any:
  """Turns each pruned matrix into a `SparseKernel`; other leaves stay.

  Args:
    params: a pytree of concrete arrays, e.g. from `prune`.
    prunable: which leaves may become sparse: a pytree of bools or a
      callable, as for `keep_top_taylor`; default `matmul_kernels`, the
      kernels that `sparse_apply` runs as sparse products (pass
      `default_prunable` to make conv kernels sparse too).
    max_density: a prunable leaf becomes sparse if at most this fraction of
      its entries is non-zero.

  Returns:
    The params with sparse kernels (`to_dense` undoes it, bit for bit).

  Example:
    >>> import jax.numpy as jnp
    >>> from gsm_optax import to_sparse, to_dense
    >>> params = {'w': jnp.zeros((4, 3)).at[1, 2].set(5.0), 'b': jnp.ones(3)}
    >>> sp = to_sparse(params)
    >>> sp['w'].nnz, sp['w'].shape, type(sp['b']).__name__
    (1, (4, 3), 'ArrayImpl')
    >>> bool((to_dense(sp)['w'] == params['w']).all())
    True
  """
  if not 0 <= max_density <= 1:
    raise ValueError(f'`max_density` is a fraction in [0, 1]; got '
                     f'{max_density}.')
  flags = prunable_lib.resolve_prunable(
      params, matmul_kernels if prunable is None else prunable,
      require_any=False)
  leaves, treedef = jax.tree.flatten(params)
  out = []
  for leaf, flag in zip(leaves, flags):
    out.append(SparseKernel.fromdense(leaf)
               if stores_sparse(leaf, flag, max_density) else leaf)
  return jax.tree.unflatten(treedef, out)


def to_dense(params: Any) -> Any:
  """The params with every `SparseKernel` made dense again."""
  return jax.tree.map(lambda x: x.todense() if is_sparse(x) else x, params,
                      is_leaf=is_sparse)
