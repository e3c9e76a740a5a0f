"""Per-layer sparsity: how GSM distributed the kept weights."""

import dataclasses
from typing import Any, Optional

import jax
import numpy as np

from gsm_optax._src.deploy import slim as slim_lib
from gsm_optax._src.deploy import sparse
from gsm_optax._src.deploy import sparse_io
from gsm_optax._src.groups import groups as groups_lib
from gsm_optax._src.spec import pattern as pattern_lib
from gsm_optax._src.spec import prunable as prunable_lib


@dataclasses.dataclass(frozen=True)
class LeafSparsity:
  """Sparsity of one parameter array."""
  path: str
  shape: tuple[int, ...]
  size: int
  nonzero: int
  prunable: bool
  nbytes: int = 0  # as a dense array
  sparse_nbytes: int = 0  # in a `save_sparse` file (N:M, or CSR if sparse)
  pattern: str = ''  # 'N:M' where the leaf follows the report's pattern

  @property
  def density(self) -> float:
    return self.nonzero / self.size if self.size else 0.0


@dataclasses.dataclass(frozen=True)
class SparsityReport:
  """Per-leaf sparsity plus totals; ``str(report)`` is a readable table."""
  leaves: tuple[LeafSparsity, ...]

  @property
  def total_size(self) -> int:
    return sum(l.size for l in self.leaves)

  @property
  def total_nonzero(self) -> int:
    return sum(l.nonzero for l in self.leaves)

  @property
  def prunable_size(self) -> int:
    return sum(l.size for l in self.leaves if l.prunable)

  @property
  def prunable_nonzero(self) -> int:
    return sum(l.nonzero for l in self.leaves if l.prunable)

  @property
  def dense_bytes(self) -> int:
    """Bytes of all leaves as dense arrays."""
    return sum(l.nbytes for l in self.leaves)

  @property
  def sparse_bytes(self) -> int:
    """Bytes of the arrays in a `save_sparse` file, before deflation."""
    return sum(l.sparse_nbytes for l in self.leaves)

  @property
  def compression(self) -> float:
    """Achieved ratio over the prunable weights: N / non-zeros (inf if 0)."""
    nz = self.prunable_nonzero
    return self.prunable_size / nz if nz else float('inf')

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready data: one dict per leaf and the totals."""
    return {
        'leaves': [dict(dataclasses.asdict(l), shape=list(l.shape),
                        density=l.density) for l in self.leaves],
        'total_size': self.total_size,
        'total_nonzero': self.total_nonzero,
        'prunable_size': self.prunable_size,
        'prunable_nonzero': self.prunable_nonzero,
        'compression': self.compression,
        'dense_bytes': self.dense_bytes,
        'sparse_bytes': self.sparse_bytes,
    }

  def __str__(self) -> str:
    width = max([len(l.path) for l in self.leaves] + [5])
    lines = [f"{'layer':<{width}}  {'shape':>18}  {'size':>10}  "
             f"{'nonzero':>10}  {'density':>8}"]
    for l in self.leaves:
      mark = '' if l.prunable else '  (not prunable)'
      mark += f'  {l.pattern}' if l.pattern else ''
      lines.append(f'{l.path:<{width}}  {str(l.shape):>18}  {l.size:>10,}  '
                   f'{l.nonzero:>10,}  {l.density:>8.2%}{mark}')
    lines.append(
        f"{'prunable total':<{width}}  {'':>18}  {self.prunable_size:>10,}  "
        f'{self.prunable_nonzero:>10,}  '
        f'{self.prunable_nonzero / max(self.prunable_size, 1):>8.2%}')
    lines.append(f'compression (prunable weights): {self.compression:.1f}x; '
                 f'all parameters: {self.total_nonzero:,} of '
                 f'{self.total_size:,} non-zero')
    lines.append(f'bytes: {self.dense_bytes:,} as dense arrays, '
                 f'{self.sparse_bytes:,} as save_sparse stores them before '
                 'deflating the file '
                 f'({self.dense_bytes / max(self.sparse_bytes, 1):.1f}x '
                 'smaller)')
    return '\n'.join(lines)


def sparsity_report(params: Any,
                    prunable: prunable_lib.PrunableSpec = None,
                    max_density: float = sparse.DEFAULT_MAX_DENSITY,
                    pattern: Any = None) -> SparsityReport:
  """Counts the non-zeros of every leaf and the achieved compression ratio.

  Args:
    params: a pytree of arrays (e.g. after `prune`).
    prunable: which leaves count towards the compression ratio (see
      `keep_top_taylor`); default every leaf with ndim >= 2.
    max_density: which prunable leaves `save_sparse` would store as CSR,
      for the bytes (see `to_sparse`).
    pattern: None, or an N:M pattern (`NM` or ``'2:4'``): the prunable
      leaves that follow it are marked with it, and their bytes are those
      of `save_sparse` with the same pattern.

  Returns:
    A `SparsityReport`; ``print(report)`` shows the per-layer table,
    ``report.to_dict()`` gives the same as data.

  Example:
    >>> import jax.numpy as jnp
    >>> from gsm_optax import sparsity_report
    >>> r = sparsity_report({'w': jnp.array([[0., 1.], [0., 0.]]), 'b': jnp.ones(2)})
    >>> r.prunable_nonzero, r.compression
    (1, 4.0)
  """
  flags = prunable_lib.resolve_prunable(params, prunable)
  with_paths = jax.tree_util.tree_flatten_with_path(params)[0]
  pattern = pattern_lib.parse(pattern)
  axes = ([None] * len(flags) if pattern is None
          else pattern_lib.axes_or_none(params, pattern))
  leaves = []
  for (path, x), flag, axis in zip(with_paths, flags, axes):
    x = np.asarray(x)
    nm = bool(flag and axis is not None and
              pattern_lib.satisfies(x, pattern, axis))
    nbytes = x.nbytes
    if nm:
      nbytes = sparse_io.nm_nbytes(x.shape, x.dtype, pattern)
    elif sparse.stores_sparse(x, flag, max_density):
      nbytes = sparse_io.csr_nbytes(x)
    leaves.append(LeafSparsity(
        path=jax.tree_util.keystr(path), shape=tuple(x.shape),
        size=int(x.size), nonzero=int(np.count_nonzero(x)), prunable=flag,
        nbytes=x.nbytes, sparse_nbytes=nbytes,
        pattern=str(pattern) if nm else ''))
  return SparsityReport(leaves=tuple(leaves))


@dataclasses.dataclass(frozen=True)
class StructureReport:
  """What a structured prune keeps: per family its channels, per kernel its
  parameters and FLOPs, before and after; ``str(report)`` is a table."""
  channels: tuple[tuple[str, int, int], ...]  # (family, before, after)
  params: tuple[tuple[str, float, float], ...]  # (leaf, before, after)
  flops: tuple[tuple[str, float, float], ...]  # (kernel, before, after)

  @property
  def total_params(self) -> tuple[float, float]:
    return (sum(p[1] for p in self.params), sum(p[2] for p in self.params))

  @property
  def total_flops(self) -> tuple[float, float]:
    return (sum(f[1] for f in self.flops), sum(f[2] for f in self.flops))

  def to_dict(self) -> dict[str, Any]:
    return {'channels': [list(c) for c in self.channels],
            'params': [list(p) for p in self.params],
            'flops': [list(f) for f in self.flops],
            'total_params': list(self.total_params),
            'total_flops': list(self.total_flops)}

  def __str__(self) -> str:
    # Two tables, each with only its own columns: channels per family (a
    # layer's output axis), then parameters and FLOPs per kernel.
    width = max([len(n) for n, *_ in self.channels + self.flops] + [6])
    lines = [f"{'family':<{width}}  {'channels kept / all':>19}"]
    for name, before, after in self.channels:
      lines.append(f'{name:<{width}}  {after:>9,} / {before:<7,}')
    params = {n: (b, a) for n, b, a in self.params}
    lines.append(f"{'kernel':<{width}}  {'params kept / all':>19}  "
                 f"{'FLOPs kept / all':>25}")
    for name, before, after in self.flops:
      p = params.get(name, (0, 0))
      lines.append(f'{name:<{width}}  {p[1]:>9,.0f} / {p[0]:<7,.0f}  '
                   f'{after:>12,.0f} / {before:<10,.0f}')
    (pb, pa), (fb, fa) = self.total_params, self.total_flops
    lines.append(f'total: params {pa:,.0f} of {pb:,.0f} ({pb / max(pa, 1):.2f}x '
                 f'fewer), FLOPs {fa:,.0f} of {fb:,.0f} '
                 f'({fb / max(fa, 1):.2f}x fewer)')
    return '\n'.join(lines)


def structure_report(params: Any, groups: Any,
                     masks: Optional[Any] = None) -> StructureReport:
  """Per family the channels kept, per kernel the parameters and FLOPs
  before and after: what `slim` will remove.

  Args:
    params: the params (e.g. after ``prune(..., groups=groups)``).
    groups: from `find_groups`.
    masks: which groups are kept, as `prune`'s masks; default: the groups
      with a non-zero element (see `slim`).

  Returns:
    A `StructureReport`; ``print(report)`` shows the table.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from gsm_optax import find_groups, structure_report
    >>> params = {'w1': jnp.ones((4, 3)).at[:, 1].set(0.0), 'b1': jnp.zeros(3),
    ...           'w2': jnp.ones((3, 2)).at[1].set(0.0)}
    >>> mlp = lambda p, x: jax.nn.relu(x @ p['w1'] + p['b1']) @ p['w2']
    >>> r = structure_report(params, find_groups(mlp, params, jnp.ones((1, 4))))
    >>> r.channels[0][1:], r.total_params, r.total_flops
    ((3, 2), (21.0, 14.0), (36.0, 24.0))
  """
  active = slim_lib.active_groups(params, groups, masks)
  counts = np.array([active[groups.offsets[i]:groups.offsets[i + 1]].sum()
                     for i in range(len(groups.families))], float)
  full = np.array([f.size for f in groups.families], float)

  def rows(polynomials):
    out = []
    for name, terms in polynomials.items():
      p = groups_lib.polynomial(terms, len(groups.families))
      out.append((name, p.value(full), p.value(counts)))
    return tuple(out)

  return StructureReport(
      channels=tuple((f.name, f.size, int(n)) for f, n in zip(
          groups.families, counts)),
      params=rows(groups.params_by_leaf), flops=rows(groups.flops_by_leaf))
