"""Per-layer sparsity: how GSM distributed the kept weights."""

import dataclasses
from typing import Any

import jax
import numpy as np

from gsm_optax._src.deploy import sparse
from gsm_optax._src.deploy import sparse_io
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
  sparse_nbytes: int = 0  # in a `save_sparse` file (CSR if sparse enough)

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
      lines.append(f'{l.path:<{width}}  {str(l.shape):>18}  {l.size:>10,}  '
                   f'{l.nonzero:>10,}  {l.density:>8.2%}{mark}')
    lines.append(
        f"{'prunable total':<{width}}  {'':>18}  {self.prunable_size:>10,}  "
        f'{self.prunable_nonzero:>10,}  '
        f'{self.prunable_nonzero / max(self.prunable_size, 1):>8.2%}')
    lines.append(f'compression (prunable weights): {self.compression:.1f}x; '
                 f'all parameters: {self.total_nonzero:,} of '
                 f'{self.total_size:,} non-zero')
    lines.append(f'bytes: {self.dense_bytes:,} dense, {self.sparse_bytes:,} '
                 f'as sparse arrays '
                 f'({self.dense_bytes / max(self.sparse_bytes, 1):.1f}x '
                 'smaller)')
    return '\n'.join(lines)


def sparsity_report(params: Any,
                    prunable: prunable_lib.PrunableSpec = None,
                    max_density: float = sparse.DEFAULT_MAX_DENSITY
                    ) -> SparsityReport:
  """Counts the non-zeros of every leaf and the achieved compression ratio.

  Args:
    params: a pytree of arrays (e.g. after `prune`).
    prunable: which leaves count towards the compression ratio (see
      `keep_top_taylor`); default every leaf with ndim >= 2.
    max_density: which prunable leaves `save_sparse` would store as CSR,
      for the bytes (see `to_sparse`).

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
  leaves = []
  for (path, x), flag in zip(with_paths, flags):
    x = np.asarray(x)
    as_csr = sparse.stores_sparse(x, flag, max_density)
    leaves.append(LeafSparsity(
        path=jax.tree_util.keystr(path), shape=tuple(x.shape),
        size=int(x.size), nonzero=int(np.count_nonzero(x)), prunable=flag,
        nbytes=x.nbytes,
        sparse_nbytes=sparse_io.csr_nbytes(x) if as_csr else x.nbytes))
  return SparsityReport(leaves=tuple(leaves))
