"""Running a function of the params with `SparseKernel` leaves.

`sparse_apply` traces the function once with dense stand-ins, then
evaluates the trace with each ``x @ W`` (a ``dot_general`` contracting the
kernel's first axis) as a sparse product, and anything else that reads a
sparse kernel (a convolution, say) with the kernel made dense. So a Flax NNX
model runs unchanged:
``sparse_apply(lambda p, x: nnx.merge(graphdef, p)(x))(sparse_params, x)``.

The BCSR product computes ``W.T @ x.T``: its output is the *transpose* of
``x @ W``. Transposing back and forth around every product cost more than
the product itself (docs: deploy), so the evaluation keeps a product's
output transposed (`_Transposed`) through elementwise operations (bias
adds, activations) into the next sparse product, and transposes only where
something else reads it.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.extend.core as jex
import numpy as np

from gsm_optax._src.deploy import native
from gsm_optax._src.deploy import sparse
from gsm_optax._src.spec import prunable as prunable_lib

# `sparse_forward` runs dense below this batch, where the sparse forward
# pass was measured no faster than the dense one (docs: deploy).
DEFAULT_DENSE_BELOW = 8

_PRIMITIVES = jex.primitives
# Operations that act entry by entry (with scalars or size-1 axes
# broadcast), so they commute with a transpose.
_ELEMENTWISE = frozenset(getattr(_PRIMITIVES, name) for name in (
    'abs_p', 'add_p', 'clamp_p', 'convert_element_type_p', 'cos_p', 'div_p',
    'erf_p', 'exp2_p', 'exp_p', 'expm1_p', 'integer_pow_p', 'log1p_p',
    'log_p', 'logistic_p', 'max_p', 'min_p', 'mul_p', 'neg_p', 'pow_p',
    'rsqrt_p', 'select_n_p', 'sign_p', 'sin_p', 'sqrt_p', 'square_p',
    'sub_p', 'tanh_p') if hasattr(_PRIMITIVES, name))


@dataclasses.dataclass(frozen=True)
class _Transposed:
  """A 2-D value ``v`` held as ``t = v.T`` (private to the evaluation)."""
  t: jax.Array

  @property
  def shape(self):
    return self.t.shape[::-1]

  @property
  def dtype(self):
    return self.t.dtype


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
    leaves, treedef = jax.tree.flatten(params, is_leaf=sparse.is_sparse)
    stand_ins = [jax.ShapeDtypeStruct(l.shape, l.dtype)
                 if sparse.is_sparse(l) else l for l in leaves]

    def flat_fn(leaves, args, kwargs):
      return fn(jax.tree.unflatten(treedef, leaves), *args, **kwargs)

    closed, out_shape = jax.make_jaxpr(flat_fn, return_shape=True)(
        stand_ins, args, kwargs)
    flat_args = leaves + jax.tree.leaves((args, kwargs))
    outs = [_plain(out) for out in
            _evaluate(closed.jaxpr, closed.consts, flat_args)]
    return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

  return wrapped


def _plain(value):
  """A value as the trace expects it: sparse kernels dense, transposed
  values transposed back."""
  if sparse.is_sparse(value):
    return value.todense()
  if isinstance(value, _Transposed):
    return value.t.T
  return value


def _evaluate(jaxpr, consts, args):
  """`jax.core.eval_jaxpr`, with sparse products where a kernel is sparse;
  its outputs may be `_Transposed`."""
  env = {}

  def read(v):
    return v.val if isinstance(v, jex.Literal) else env[v]

  for var, value in zip(jaxpr.constvars, consts):
    env[var] = value
  for var, value in zip(jaxpr.invars, args):
    env[var] = value
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    if any(sparse.is_sparse(x) or isinstance(x, _Transposed)
           for x in invals):
      outvals = _special_eqn(eqn, invals)
    else:
      outvals = _bind(eqn, invals)
    if not eqn.primitive.multiple_results:
      outvals = [outvals]
    for var, value in zip(eqn.outvars, outvals):
      env[var] = value
  return [read(v) for v in jaxpr.outvars]


def _special_eqn(eqn, invals):
  """An equation that reads a sparse kernel or a transposed value."""
  prim = eqn.primitive
  out_dtype = eqn.outvars[0].aval.dtype
  if prim is _PRIMITIVES.dot_general_p and _is_matmul_on_kernel(eqn, invals):
    return _matmul(invals[0], invals[1], out_dtype)
  if prim is _PRIMITIVES.dot_general_p and _is_matmul_on_transposed(
      eqn, invals):  # a dense kernel after a sparse one: stay transposed
    return _Transposed(jax.lax.dot_general(
        invals[1], invals[0].t, (((0,), (0,)), ((), ())),
        precision=eqn.params['precision'],
        preferred_element_type=eqn.params['preferred_element_type']))
  if (prim is _PRIMITIVES.convert_element_type_p and
      eqn.params['new_dtype'] == invals[0].dtype):
    return invals[0]  # a no-op cast (e.g. Flax's dtype promotion)
  if prim in _ELEMENTWISE and _commutes_with_transpose(eqn, invals):
    return _Transposed(_bind(eqn, [_transpose_operand(x) for x in invals]))
  if prim is _PRIMITIVES.jit_p:  # look inside: jnp.matmul, relu are jitted
    closed = eqn.params['jaxpr']
    outs = _evaluate(closed.jaxpr, closed.consts, invals)
    return outs if prim.multiple_results else outs[0]
  if prim is _PRIMITIVES.custom_jvp_call_p:  # e.g. relu; no derivative here
    closed = eqn.params['call_jaxpr']
    return _evaluate(closed.jaxpr, closed.consts, invals)
  return _bind(eqn, [_plain(x) for x in invals])


def _bind(eqn, invals):
  params = eqn.primitive.get_bind_params(eqn.params)
  if isinstance(params, tuple):  # older JAX: (subfuns, params)
    subfuns, params = params
    return eqn.primitive.bind(*subfuns, *invals, **params)
  return eqn.primitive.bind(*invals, **params)


def _is_x_at_w(eqn, x_ndim):
  """Whether a ``dot_general`` is ``x @ W``: the last axis of ``x`` (of
  ``x_ndim`` axes) against the first of a 2-D ``W``, no batch axes."""
  (x_contract, k_contract), (x_batch, k_batch) = eqn.params[
      'dimension_numbers']
  return (tuple(k_contract) == (0,) and tuple(x_contract) == (x_ndim - 1,)
          and not x_batch and not k_batch)


def _is_matmul_on_kernel(eqn, invals):
  x, kernel = invals
  return (not sparse.is_sparse(x) and sparse.is_sparse(kernel) and
          kernel.ndim == 2 and _is_x_at_w(eqn, len(x.shape)))


def _is_matmul_on_transposed(eqn, invals):
  x, kernel = invals
  return (isinstance(x, _Transposed) and not sparse.is_sparse(kernel) and
          not isinstance(kernel, _Transposed) and np.ndim(kernel) == 2 and
          _is_x_at_w(eqn, 2))


def _matmul(x, kernel, out_dtype):
  """``x @ kernel`` for a 2-D sparse kernel ``(in, out)``, as ``kernel.T @
  x.T`` with the BCSR operand on the left (on the CPU by `native`'s kernel,
  which reads ``x`` untransposed); `_Transposed` for a 2-D ``x``."""
  if isinstance(x, _Transposed):
    return _Transposed((kernel.matrix @ x.t).astype(out_dtype))
  if x.ndim == 2:
    return _Transposed(
        native.csr_times_transposed(kernel.matrix, x).astype(out_dtype))
  rows = x.reshape(-1, x.shape[-1])
  out = native.csr_times_transposed(kernel.matrix, rows).T.astype(out_dtype)
  return out.reshape(x.shape[:-1] + (kernel.shape[-1],))


def _commutes_with_transpose(eqn, invals):
  """Whether an elementwise equation on a transposed value may run on the
  transposes of its operands: every operand a scalar or a 2-D array that
  broadcasts to the (2-D) output, and no sparse kernel among them."""
  out_shape = tuple(eqn.outvars[0].aval.shape)
  if len(eqn.outvars) != 1 or len(out_shape) != 2:
    return False
  for x in invals:
    if sparse.is_sparse(x):
      return False
    shape = tuple(np.shape(x)) if not isinstance(x, _Transposed) else x.shape
    if shape and (len(shape) != 2 or any(
        s not in (1, o) for s, o in zip(shape, out_shape))):
      return False
  return True


def _transpose_operand(x):
  if isinstance(x, _Transposed):
    return x.t
  return x.T if np.ndim(x) == 2 else x


def sparse_forward(fn: Callable[..., Any], params: Any,
                   prunable: prunable_lib.PrunableSpec = None,
                   max_density: float = sparse.DEFAULT_MAX_DENSITY,
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
    prunable: which leaves may run sparse (see `to_sparse`); default
      `matmul_kernels`, the ``x @ W`` kernels (a sparse conv kernel would be
      made dense on every call).
    max_density: see `to_sparse`.
    dense_below: batches with fewer rows (``x.shape[0]``) run dense.

  Returns:
    ``predict(x)``.
  """
  sparse_params = sparse.to_sparse(params, prunable, max_density)
  params = jax.device_put(params)  # on the device once, not every call
  dense_fn = jax.jit(fn)
  sparse_fn = jax.jit(sparse_apply(fn))

  def predict(x):
    if np.shape(x)[0] < dense_below:
      return dense_fn(params, x)
    return sparse_fn(sparse_params, x)

  return predict
