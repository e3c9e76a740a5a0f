"""A pruned model as sparse kernels: in memory, and run without densifying.

`to_sparse` turns each pruned kernel into a `SparseKernel`: the compressed
sparse rows (``jax.experimental.sparse.BCSR``) of its *transposed* 2-D view,
``(out, in)``, so that ``x @ W`` becomes ``(W.T @ x.T).T`` with the sparse
operand on the left, the product that BCSR computes fastest (measured
against BCOO, a gather-and-segment-sum product and a padded-row product; see
the docs' deploy page). A conv kernel
``(h, w, in, out)`` is viewed as ``(h * w * in, out)``.

`sparse_apply` runs any function of the params with such leaves: it traces
the function once with dense stand-ins, then evaluates the trace with each
``x @ W`` (a ``dot_general`` contracting the kernel's first axis) as a
sparse product, and anything else that reads a sparse kernel (a convolution,
say) with the kernel made dense. So a Flax NNX model runs unchanged:
``sparse_apply(lambda p, x: nnx.merge(graphdef, p)(x))(sparse_params, x)``.
"""

import dataclasses
from typing import Any, Callable

import jax
from jax.experimental import sparse as jsparse
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np

from gsm_optax._src import prunable as prunable_lib

# Kernels denser than this stay dense: a CSR entry costs its value and an
# index, so above about half density it is bigger than the dense array, and
# its product is slower long before that.
DEFAULT_MAX_DENSITY = 0.25
# `sparse_forward` runs dense below this batch, where the sparse forward
# pass was measured no faster than the dense one (docs: deploy).
DEFAULT_DENSE_BELOW = 8


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
  """Turns each pruned kernel into a `SparseKernel`; other leaves stay.

  Args:
    params: a pytree of concrete arrays, e.g. from `prune`.
    prunable: which leaves may become sparse (see `keep_top_taylor`);
      default every leaf with ``ndim >= 2``.
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
  flags = prunable_lib.resolve_prunable(params, prunable, require_any=False)
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


def sparse_apply(fn: Callable[..., Any]) -> Callable[..., Any]:
  """Runs ``fn(params, *args)`` with the `SparseKernel` leaves of params.

  Every ``x @ W`` on a sparse kernel (a ``dot_general`` that contracts the
  last axis of ``x`` with the kernel's first, as ``nnx.Linear`` and
  ``flax.linen.Dense`` do) runs as a sparse product; every other use of a
  sparse kernel sees it dense. The outputs equal ``fn(to_dense(params),
  *args)`` up to float rounding (the products sum in another order).

  Args:
    fn: a function whose first argument is the params pytree.

  Returns:
    A function with ``fn``'s signature that accepts sparse params; it can be
    jitted.

  Example:
    >>> import jax.numpy as jnp
    >>> from gsm_optax import sparse_apply, to_sparse
    >>> params = {'w': jnp.zeros((4, 3)).at[1, 2].set(5.0)}
    >>> f = lambda p, x: x @ p['w']
    >>> sparse_apply(f)(to_sparse(params), jnp.ones((2, 4))).tolist()
    [[0.0, 0.0, 5.0], [0.0, 0.0, 5.0]]
  """

  def wrapped(params, *args, **kwargs):
    leaves, treedef = jax.tree.flatten(params, is_leaf=is_sparse)
    stand_ins = [jax.ShapeDtypeStruct(l.shape, l.dtype) if is_sparse(l) else l
                 for l in leaves]

    def flat_fn(leaves, args, kwargs):
      return fn(jax.tree.unflatten(treedef, leaves), *args, **kwargs)

    closed, out_shape = jax.make_jaxpr(flat_fn, return_shape=True)(
        stand_ins, args, kwargs)
    flat_args = leaves + jax.tree.leaves((args, kwargs))
    outs = _evaluate(closed.jaxpr, closed.consts, flat_args)
    return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

  return wrapped


def _evaluate(jaxpr, consts, args):
  """`jax.core.eval_jaxpr`, with sparse products where a kernel is sparse."""
  env = {}

  def read(v):
    return v.val if isinstance(v, jex.Literal) else env[v]

  for var, value in zip(jaxpr.constvars, consts):
    env[var] = value
  for var, value in zip(jaxpr.invars, args):
    env[var] = value
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    if any(map(is_sparse, invals)):
      outvals = _sparse_eqn(eqn, invals)
    else:
      outvals = _bind(eqn, invals)
    if not eqn.primitive.multiple_results:
      outvals = [outvals]
    for var, value in zip(eqn.outvars, outvals):
      env[var] = value
  return [read(v) for v in jaxpr.outvars]


def _sparse_eqn(eqn, invals):
  prim = eqn.primitive
  if prim is jex.primitives.dot_general_p and _is_matmul_on_kernel(eqn,
                                                                   invals):
    out = _matmul(invals[0], invals[1])
    return out.astype(eqn.outvars[0].aval.dtype)
  if (prim is jex.primitives.convert_element_type_p and
      eqn.params['new_dtype'] == invals[0].dtype):
    return invals[0]  # a no-op cast (e.g. Flax's dtype promotion)
  if prim is jex.primitives.jit_p:  # look inside: jnp.matmul is jitted
    closed = eqn.params['jaxpr']
    outs = _evaluate(closed.jaxpr, closed.consts, invals)
    return outs if prim.multiple_results else outs[0]
  return _bind(eqn, [x.todense() if is_sparse(x) else x for x in invals])


def _bind(eqn, invals):
  params = eqn.primitive.get_bind_params(eqn.params)
  if isinstance(params, tuple):  # older JAX: (subfuns, params)
    subfuns, params = params
    return eqn.primitive.bind(*subfuns, *invals, **params)
  return eqn.primitive.bind(*invals, **params)


def _is_matmul_on_kernel(eqn, invals):
  x, kernel = invals
  (x_contract, k_contract), (x_batch, k_batch) = eqn.params[
      'dimension_numbers']
  return (not is_sparse(x) and is_sparse(kernel) and kernel.ndim == 2 and
          tuple(k_contract) == (0,) and tuple(x_contract) == (x.ndim - 1,)
          and not x_batch and not k_batch)


def _matmul(x, kernel):
  """``x @ kernel`` for a 2-D sparse kernel ``(in, out)``, as
  ``(kernel.T @ x.T).T`` with the BCSR operand on the left."""
  rows = x.reshape(-1, x.shape[-1])
  out = (kernel.matrix @ rows.T).T
  return out.reshape(x.shape[:-1] + (kernel.shape[-1],))

def sparse_forward(fn: Callable[..., Any], params: Any,
                   prunable: prunable_lib.PrunableSpec = None,
                   max_density: float = DEFAULT_MAX_DENSITY,
                   dense_below: int = DEFAULT_DENSE_BELOW
                   ) -> Callable[..., Any]:
  """A jitted ``x -> fn(params, x)`` that runs sparse where that is faster.

  For batches of at least ``dense_below`` rows it runs `sparse_apply` on
  `to_sparse` of the params; for smaller ones, where the sparse forward
  pass loses to the dense one, it falls back to the dense params. It keeps
  both, so it needs the memory of both.

  Args:
    fn: ``fn(params, x)``, e.g. ``lambda p, x: nnx.merge(graphdef, p)(x)``.
    params: the pruned params (dense arrays).
    prunable: which leaves may run sparse (see `to_sparse`); pass the
      matrices only (``ndim == 2``) to keep convolutions dense, since a
      sparse conv kernel is made dense on every call.
    max_density: see `to_sparse`.
    dense_below: batches with fewer rows (``x.shape[0]``) run dense.

  Returns:
    ``predict(x)``.
  """
  sparse_params = to_sparse(params, prunable, max_density)
  params = jax.device_put(params)  # on the device once, not every call
  dense_fn = jax.jit(fn)
  sparse_fn = jax.jit(sparse_apply(fn))

  def predict(x):
    if np.shape(x)[0] < dense_below:
      return dense_fn(params, x)
    return sparse_fn(sparse_params, x)

  return predict
