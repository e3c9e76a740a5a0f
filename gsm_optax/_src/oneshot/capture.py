"""The calibration inputs of every kernel, read off the model's jaxpr.

The jaxpr that `find_groups` analyses already says which value each
``dot_general`` multiplies a parameter by: `groups.trace.evaluate` runs it
and shows every such product to an observer, which here sums the
statistics one-shot pruning needs (each input's sum of squares for Wanda,
``X^T X`` for SparseGPT) over the calibration tokens. No hook is written
per layer, and a kernel used twice (weight sharing) sums both inputs.
"""

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gsm_optax._src.groups import trace as trace_lib


@dataclasses.dataclass(frozen=True)
class Site:
  """One product of a parameter leaf: the leaf, the leaf's contracted axes
  (ascending) and the operand's axes they pair with, and the value it
  multiplies (``source``: sites of one value share it). ``unsupported``:
  why the statistics of this product are not defined (a convolution, a
  batch axis), or ''."""
  leaf: int
  kernel_axes: tuple
  input_axes: tuple
  source: int
  unsupported: str = ''


def _site(eqn, position, leaf, source) -> Site:
  if eqn.primitive.name == 'conv_general_dilated':
    spec = eqn.params['dimension_numbers'].rhs_spec
    return Site(leaf, (spec[1],), (), source, 'a convolution')
  (lc, rc), (lb, rb) = eqn.params['dimension_numbers']
  kernel_c, input_c = (rc, lc) if position == 1 else (lc, rc)
  pairs = sorted(zip(kernel_c, input_c))
  why = 'a matmul with a batch axis' if (lb or rb) else ''
  return Site(leaf, tuple(int(k) for k, _ in pairs),
              tuple(int(a) for _, a in pairs), source, why)


class Traced:
  """``forward(params, batch)`` traced once: its jaxpr, the analysis that
  evaluates it, and its products of parameters (`Site`), in the order the
  model computes them."""

  def __init__(self, forward, params, batch):
    leaves, self.treedef = jax.tree.flatten(params)
    self.num_params = len(leaves)
    self.closed, _ = trace_lib.trace(lambda p, b: forward(p, b), params,
                                     (batch,))
    self.analysis = trace_lib.analyze(self.closed, self.num_params)
    found, sources, alive = [], {}, []

    def observe(eqn, values, position, leaf):
      # The value multiplied, not the jaxpr variable: a jitted layer called
      # twice reads one inner variable for two values.
      value = values[1 - position]
      alive.append(value)  # so that no id is reused during the walk
      source = sources.setdefault(id(value), len(sources))
      found.append(_site(eqn, position, leaf, source))

    jax.eval_shape(lambda l, b: self.run(l, b, observe), leaves, batch)
    self.sites = found

  def run(self, param_leaves, batch, observe=None):
    """The model's outputs, ``observe`` seeing its products."""
    return trace_lib.evaluate(self.analysis, self.closed, {},
                              list(param_leaves) + jax.tree.leaves(batch),
                              observe)

  def statistics(self, sources: dict[int, str]):
    """A jitted ``(param_leaves, batch) -> {source: statistic}`` for the
    sources asked (``'sq_norms'``: each input's sum of squares over the
    tokens; ``'hessian'``: ``X^T X``), in float32."""

    def compute(param_leaves, batch):
      out = {}
      counter = iter(range(len(self.sites)))

      def observe(eqn, values, position, leaf):
        site = self.sites[next(counter)]
        kind = sources.get(site.source)
        if kind is None or site.source in out or site.unsupported:
          return
        x = values[1 - position]
        n = len(site.input_axes)
        x = jnp.moveaxis(x, site.input_axes, tuple(range(x.ndim - n, x.ndim)))
        x = x.reshape(-1, int(np.prod(x.shape[x.ndim - n:]))).astype(
            jnp.float32)
        out[site.source] = (jnp.sum(x * x, axis=0) if kind == 'sq_norms'
                            else x.T @ x)

      self.run(param_leaves, batch, observe)
      return out

    return jax.jit(compute)


def kernel_view(kernel: jax.Array, axes: tuple) -> jax.Array:
  """The kernel as ``(out, in)``: its contracted ``axes`` flattened to the
  columns (in axis order), every other axis to the rows."""
  moved = jnp.moveaxis(kernel, axes, tuple(range(len(axes))))
  d_in = int(np.prod([kernel.shape[a] for a in axes]))
  return moved.reshape(d_in, -1).T


def from_view(view: jax.Array, like: jax.Array, axes: tuple) -> jax.Array:
  """The inverse of `kernel_view`, in ``like``'s shape and dtype."""
  moved_shape = tuple(like.shape[a] for a in axes) + tuple(
      d for k, d in enumerate(like.shape) if k not in axes)
  moved = view.T.reshape(moved_shape)
  return jnp.moveaxis(moved, tuple(range(len(axes))), axes).astype(like.dtype)


def num_samples(batch: Any) -> int:
  """The samples (sequences) in a batch: its first leaf's leading axis."""
  leaves = jax.tree.leaves(batch)
  return int(np.shape(leaves[0])[0]) if leaves and np.ndim(leaves[0]) else 1


def merge(total: Optional[dict], more: dict) -> dict:
  """Adds two dicts of statistics."""
  if total is None:
    return dict(more)
  return {k: total[k] + more[k] for k in total}
