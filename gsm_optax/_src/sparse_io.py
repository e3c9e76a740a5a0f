"""A compact file for pruned params: CSR kernels, a format version, safe saves.

The file is a NumPy ``.npz`` archive (deflated): a JSON header (the format
name and version, the tree of nested dicts and lists, and per leaf its
shape, dtype, and whether it is stored dense or as CSR) and the arrays.
Each sparse kernel is stored as `sparse.SparseKernel` holds it, the CSR of
its transposed 2-D view: values in the kernel's own dtype (or a narrower
one the caller asks for, recorded in the header), column indices and row
pointers in the smallest unsigned integer type that holds them. Float values
are stored as their bit patterns, so loading gives back every bit (NaN
payloads, -0.0, bfloat16). A save writes a temporary file beside the target
and renames it, so a failed save never destroys the last good file.
"""

import io
import json
import os
import tempfile
from typing import Any, Optional
import zipfile
import zlib

import jax
from jax.experimental import sparse as jsparse
import jax.numpy as jnp
import numpy as np

from gsm_optax._src import prunable as prunable_lib
from gsm_optax._src import sparse

FORMAT = 'gsm_optax.sparse'
FORMAT_VERSION = 1
_HEADER = 'header.json'


def index_dtype(max_value: int) -> np.dtype:
  """The smallest unsigned integer type that holds ``0..max_value``."""
  for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
    if max_value <= np.iinfo(dtype).max:
      return np.dtype(dtype)
  raise ValueError(f'{max_value} does not fit in 64 bits.')


def csr_nbytes(kernel: Any, values_dtype: Optional[Any] = None) -> int:
  """Bytes of a kernel's CSR arrays in the file (before deflation)."""
  kernel = np.asarray(kernel)
  rows, cols = kernel.shape[-1], int(np.prod(kernel.shape[:-1]))
  nnz = int(np.count_nonzero(kernel))
  value_bytes = np.dtype(values_dtype or kernel.dtype).itemsize
  return (nnz * (value_bytes + index_dtype(max(cols - 1, 0)).itemsize) +
          (rows + 1) * index_dtype(nnz).itemsize)


def save_sparse(path: str, params: Any,
                prunable: prunable_lib.PrunableSpec = None,
                max_density: float = sparse.DEFAULT_MAX_DENSITY,
                values_dtype: Optional[Any] = None) -> int:
  """Saves pruned params compactly: sparse kernels as CSR, the rest dense.

  Args:
    path: the file to write (by convention ``*.npz``); replaced atomically.
    params: nested dicts (and lists or tuples) of arrays, e.g. ``prune``'s
      output; with Flax NNX, ``nnx.to_pure_dict(nnx.state(model))``.
    prunable: which leaves may be stored sparse (see `keep_top_taylor`).
    max_density: a prunable leaf is stored sparse if at most this fraction
      of it is non-zero (see `to_sparse`).
    values_dtype: store the sparse kernels' values in this narrower float
      dtype (e.g. ``'float16'``); recorded in the header, and `load_sparse`
      casts them back, so the round trip is then not exact. Default: the
      kernels' own dtype, exact.

  Returns:
    The size of the file written, in bytes.

  Raises:
    ValueError: params that are not nested dicts, lists or tuples of arrays,
      or a ``values_dtype`` that is not a float type.
  """
  if values_dtype is not None and not jnp.issubdtype(values_dtype,
                                                     jnp.floating):
    raise ValueError(f'`values_dtype` must be a float dtype such as '
                     f"'float16'; got {values_dtype!r}.")
  tree = sparse.to_sparse(params, prunable, max_density)
  arrays, entries = {}, []
  structure = _encode(tree, arrays, entries, values_dtype)
  header = {'format': FORMAT, 'version': FORMAT_VERSION,
            'tree': structure, 'leaves': entries}
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path),
                             suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      with zipfile.ZipFile(f, 'w', zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(_HEADER, json.dumps(header))
        for name, array in arrays.items():
          buffer = io.BytesIO()
          np.save(buffer, array, allow_pickle=False)
          archive.writestr(name + '.npy', buffer.getvalue())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return os.path.getsize(path)


def load_sparse(path: str, as_sparse: bool = False, like: Any = None) -> Any:
  """Loads a file written by `save_sparse`.

  Args:
    path: the file.
    as_sparse: False (default): every leaf as a dense NumPy array,
      bit-identical to what was saved (unless a narrower ``values_dtype``
      was asked for); True: the kernels stored sparse as `SparseKernel`,
      ready for `sparse_apply`.
    like: optional params to check the file against: the same nested
      structure and, leaf by leaf, the same shapes.

  Returns:
    The params, nested dicts as nested dicts.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    ValueError: the file is not a gsm_optax sparse file, is truncated, has
      another format version, or does not match ``like``.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'{path}: no such file. Write it with gsm_optax.save_sparse(path, '
        'params), or check the path.')
  try:
    with zipfile.ZipFile(path) as archive:
      header = json.loads(archive.read(_HEADER))
      _check_header(path, header)
      arrays = {name[:-len('.npy')]: np.load(io.BytesIO(archive.read(name)),
                                              allow_pickle=False)
                for name in archive.namelist() if name.endswith('.npy')}
  except (zipfile.BadZipFile, KeyError, EOFError, json.JSONDecodeError,
          zlib.error, OSError) as e:
    raise ValueError(
        f'{path}: not a readable gsm_optax sparse file (truncated or '
        f'corrupt: {e}). Save the params again with gsm_optax.save_sparse.'
    ) from e
  leaves = [_decode_leaf(i, entry, arrays, as_sparse)
            for i, entry in enumerate(header['leaves'])]
  params = _build(header['tree'], iter(leaves))
  if like is not None:
    _check_like(path, params, like)
  return params


def _check_header(path, header):
  if header.get('format') != FORMAT:
    raise ValueError(f'{path}: not a gsm_optax sparse file (format '
                     f"{header.get('format')!r}). Save the params with "
                     'gsm_optax.save_sparse.')
  if header.get('version') != FORMAT_VERSION:
    raise ValueError(
        f"{path}: written in format version {header.get('version')}; this "
        f'gsm_optax reads version {FORMAT_VERSION}. Load it with the '
        'gsm_optax version that wrote it and save it again with this one.')


def _encode(tree, arrays, entries, values_dtype):
  """The tree's structure as JSON, its leaves into ``arrays``/``entries``."""
  if isinstance(tree, dict):
    if not all(isinstance(k, (str, int)) and not isinstance(k, bool)
               for k in tree):
      raise ValueError('save_sparse needs str or int dict keys (as Flax\'s '
                       f'pure dicts have); got {list(tree)!r}.')
    return {'dict': [[k, _encode(v, arrays, entries, values_dtype)]
                     for k, v in tree.items()]}
  if isinstance(tree, (list, tuple)):
    return {type(tree).__name__: [_encode(v, arrays, entries, values_dtype)
                                  for v in tree]}
  i = len(entries)
  if sparse.is_sparse(tree):
    matrix = tree.matrix
    dtype = np.dtype(values_dtype or tree.dtype)
    values = np.asarray(matrix.data).astype(dtype)
    indices = np.asarray(matrix.indices)
    indptr = np.asarray(matrix.indptr)
    arrays[f'{i}.values'] = _bits(values)
    arrays[f'{i}.indices'] = indices.astype(index_dtype(max(
        matrix.shape[1] - 1, 0)))
    arrays[f'{i}.indptr'] = indptr.astype(index_dtype(tree.nnz))
    entries.append({'kind': 'csr', 'shape': list(tree.shape),
                    'dtype': np.dtype(tree.dtype).name,
                    'stored_dtype': dtype.name})
    return {'leaf': i}
  if not hasattr(tree, 'shape') or not hasattr(tree, 'dtype'):
    raise ValueError(
        'save_sparse saves nested dicts, lists and tuples of arrays; got a '
        f'{type(tree).__name__}. With Flax NNX pass '
        '`nnx.to_pure_dict(nnx.state(model))`.')
  array = np.asarray(tree)
  arrays[str(i)] = _bits(array)
  entries.append({'kind': 'dense', 'shape': list(array.shape),
                  'dtype': array.dtype.name, 'stored_dtype': array.dtype.name})
  return {'leaf': i}


def _bits(array: np.ndarray) -> np.ndarray:
  """Floats as unsigned integers of their width (exact for every dtype,
  bfloat16 too, which the .npy format cannot name)."""
  if jnp.issubdtype(array.dtype, jnp.floating):
    return array.view(np.dtype(f'uint{8 * array.dtype.itemsize}'))
  return array


def _from_bits(array: np.ndarray, dtype_name: str) -> np.ndarray:
  dtype = jnp.dtype(dtype_name)
  return array.view(dtype) if jnp.issubdtype(dtype, jnp.floating) else array


def _decode_leaf(i, entry, arrays, as_sparse):
  shape, dtype = tuple(entry['shape']), jnp.dtype(entry['dtype'])
  if entry['kind'] == 'dense':
    return _from_bits(arrays[str(i)], entry['stored_dtype']).reshape(shape)
  values = _from_bits(arrays[f'{i}.values'], entry['stored_dtype'])
  values = values.astype(dtype)
  indices = arrays[f'{i}.indices'].astype(np.int32)
  indptr = arrays[f'{i}.indptr'].astype(np.int32)
  rows, cols = shape[-1], int(np.prod(shape[:-1]))
  if as_sparse:
    matrix = jsparse.BCSR((jnp.asarray(values), jnp.asarray(indices),
                           jnp.asarray(indptr)), shape=(rows, cols))
    return sparse.SparseKernel(matrix, shape)
  dense = np.zeros((rows, cols), dtype)
  row_of = np.repeat(np.arange(rows), np.diff(indptr))
  dense[row_of, indices] = values
  return dense.T.reshape(shape)


def _build(structure, leaves):
  if 'dict' in structure:
    return {k: _build(v, leaves) for k, v in structure['dict']}
  if 'list' in structure:
    return [_build(v, leaves) for v in structure['list']]
  if 'tuple' in structure:
    return tuple(_build(v, leaves) for v in structure['tuple'])
  return next(leaves)


def _check_like(path, params, like):
  got = jax.tree_util.tree_flatten_with_path(params, is_leaf=sparse.is_sparse)
  want = jax.tree_util.tree_flatten_with_path(like)
  if got[1] != want[1]:
    raise ValueError(
        f'{path}: its params have the structure {got[1]}, the model '
        f'{want[1]}. Load the file written for this model, or save this '
        "model's params again.")
  for (p, a), (_, b) in zip(got[0], want[0]):
    if tuple(a.shape) != tuple(np.shape(b)):
      raise ValueError(
          f'{path}: {jax.tree_util.keystr(p)} has shape {tuple(a.shape)} in '
          f'the file but {tuple(np.shape(b))} in the model. Load the file '
          "written for this model, or save this model's params again.")
