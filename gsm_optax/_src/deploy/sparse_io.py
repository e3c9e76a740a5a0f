"""A compact file for pruned params: CSR kernels, a format version, safe saves.

The file is a NumPy ``.npz`` archive (deflated): a JSON header (the format
name and version, the tree of nested dicts and lists, or for any other
pytree its leaves' paths, and per leaf its shape, dtype, and whether it is
stored dense or as CSR) and the arrays.
With a ``pattern``, each kernel that follows the N:M pattern is stored as N
values a block and their in-block indices, bit-packed (``ceil(log2 M)``
bits each: a 2:4 float32 kernel in 0.53 of its dense bytes); JAX has no N:M
matmul, so it loads dense. Each other sparse kernel is stored as
`sparse.SparseKernel` holds it, the CSR of its transposed 2-D view: values in the kernel's own dtype (or a narrower
one the caller asks for, recorded in the header), column indices and row
pointers in the smallest unsigned integer type that holds them. Float values
are stored as their bit patterns, so loading gives back every bit (NaN
payloads, -0.0, bfloat16). A save writes a temporary file beside the target
and renames it, so a failed save never destroys the last good file.

Long because it is the whole format both ways (writing, reading, and the
checks that name the file and the fix), which must be read together.
"""

import dataclasses
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

from gsm_optax._src.deploy import sparse
from gsm_optax._src.spec import pattern as pattern_lib
from gsm_optax._src.spec import prunable as prunable_lib

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


def nm_nbytes(shape: tuple, dtype: Any, pattern: pattern_lib.NM,
              values_dtype: Optional[Any] = None) -> int:
  """Bytes of an N:M kernel in the file (before deflation): N values a
  block, and their in-block indices at ``ceil(log2 M)`` bits each."""
  blocks = int(np.prod(shape)) // pattern.m
  values = blocks * pattern.n * np.dtype(values_dtype or dtype).itemsize
  return values + -(-blocks * pattern.n * _index_bits(pattern.m) // 8)


@dataclasses.dataclass(frozen=True)
class _NMKernel:
  """A kernel to store as N:M (a leaf of the tree being saved)."""
  array: np.ndarray
  pattern: pattern_lib.NM
  axis: int


def save_sparse(path: str, params: Any,
                prunable: prunable_lib.PrunableSpec = None,
                max_density: float = sparse.DEFAULT_MAX_DENSITY,
                values_dtype: Optional[Any] = None,
                pattern: Any = None) -> int:
  """Saves pruned params compactly: sparse kernels as CSR, the rest dense.

  Args:
    path: the file to write (by convention ``*.npz``); replaced atomically.
    params: a pytree of arrays, e.g. ``prune``'s output. Nested dicts,
      lists and tuples (Flax NNX: ``nnx.to_pure_dict(nnx.state(model))``)
      come back as they are; any other pytree (an Equinox module filtered
      with ``eqx.filter(model, eqx.is_array)``, an ``nnx.State``) is stored
      as its leaves and their paths, and comes back as that pytree with
      ``load_sparse(path, like=...)``.
    prunable: which leaves may be stored sparse (see `keep_top_taylor`);
      default `default_prunable`, every kernel (conv kernels too: the file
      is smaller, and `load_sparse` decides what runs sparse).
    max_density: a prunable leaf is stored sparse if at most this fraction
      of it is non-zero (see `to_sparse`).
    values_dtype: store the sparse kernels' values in this narrower float
      dtype (e.g. ``'float16'``); recorded in the header, and `load_sparse`
      casts them back, so the round trip is then not exact. Default: the
      kernels' own dtype, exact.
    pattern: None, or an N:M pattern (`NM` or ``'2:4'``): every prunable
      leaf that follows it (at most N non-zeros in each block of M along
      its axis, see `NM`) is stored as N values a block and their bit-packed
      in-block indices, and loads back dense, bit for bit.

  Returns:
    The size of the file written, in bytes.

  Raises:
    ValueError: a leaf that is not an array (e.g. an Equinox module's
      activation function), or a ``values_dtype`` that is not a float type.
    FileNotFoundError: the folder of ``path`` does not exist.
  """
  if values_dtype is not None and not jnp.issubdtype(values_dtype,
                                                     jnp.floating):
    raise ValueError(f'`values_dtype` must be a float dtype such as '
                     f"'float16'; got {values_dtype!r}.")
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise FileNotFoundError(
        f'save_sparse: the folder of `path`={path!r} does not exist '
        f'({directory}). Create it first, e.g. '
        f'`os.makedirs({os.path.dirname(path) or "."!r}, exist_ok=True)`.')
  flags = prunable_lib.resolve_prunable(
      params, prunable_lib.default_prunable if prunable is None else prunable,
      require_any=False)
  as_nm = [None] * len(flags)
  pattern = pattern_lib.parse(pattern)
  if pattern is not None:
    leaves = jax.tree.leaves(params)
    for i, axis in enumerate(pattern_lib.axes_or_none(params, pattern)):
      if flags[i] and axis is not None and pattern_lib.satisfies(
          leaves[i], pattern, axis):
        as_nm[i] = _NMKernel(np.asarray(leaves[i]), pattern, axis)
        flags[i] = False
  treedef = jax.tree.structure(params)
  flags_tree = jax.tree.unflatten(treedef, flags)  # may be a callable module
  tree = sparse.to_sparse(params, lambda _: flags_tree, max_density)
  tree = jax.tree.unflatten(treedef, [
      nm if nm is not None else leaf for nm, leaf in zip(
          as_nm, treedef.flatten_up_to(tree))])
  arrays, entries = {}, []
  if _plain_containers(tree):
    structure = _encode(tree, arrays, entries, values_dtype)
  else:  # any other pytree: its leaves in order, with their paths
    with_paths = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: sparse.is_sparse(x) or isinstance(
            x, _NMKernel))[0]
    structure = {'flat': [jax.tree_util.keystr(p) for p, _ in with_paths]}
    for _, leaf in with_paths:
      _encode(leaf, arrays, entries, values_dtype)
  header = {'format': FORMAT, 'version': FORMAT_VERSION,
            'tree': structure, 'leaves': entries}
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


def load_sparse(path: str, as_sparse: bool = False, like: Any = None,
                prunable: prunable_lib.PrunableSpec = None) -> Any:
  """Loads a file written by `save_sparse`.

  Args:
    path: the file.
    as_sparse: False (default): every leaf as a dense NumPy array,
      bit-identical to what was saved (unless a narrower ``values_dtype``
      was asked for); True: the kernels that inference runs as sparse
      products (``prunable``) as `SparseKernel`, ready for `sparse_apply`,
      and every other leaf dense, conv kernels included, even when the file
      stores them sparse.
    like: optional params to check the file against: the same structure
      and, leaf by leaf, the same shapes. A file saved from a pytree other
      than nested dicts, lists and tuples comes back as ``like``'s pytree
      (without ``like``: a flat dict from each leaf's path to the leaf, e.g.
      ``"['fc1']['kernel'].value"`` for an ``nnx.State``: pass
      ``like=nnx.state(model, nnx.Param)`` to get the state back, or save
      ``nnx.to_pure_dict(state)``, which loads as nested dicts).
    prunable: with ``as_sparse``, which leaves come back sparse (if the
      file stores them sparse): a pytree of bools or a callable of the
      params, as for `to_sparse`; default `matmul_kernels`, the same rule as
      `to_sparse`'s.

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
  entries = header['leaves']
  flags = [False] * len(entries)
  if as_sparse:  # decided on the params' shapes, before any is built
    stand_ins = _build(header['tree'], iter(
        jax.ShapeDtypeStruct(tuple(e['shape']), jnp.dtype(e['dtype']))
        for e in entries))
    flags = prunable_lib.resolve_prunable(
        stand_ins, sparse.matmul_kernels if prunable is None else prunable,
        require_any=False)
  leaves = [_decode_leaf(i, entry, arrays, flag)
            for i, (entry, flag) in enumerate(zip(entries, flags))]
  if 'flat' in header['tree']:
    return _unflatten_like(path, header['tree']['flat'], leaves, like)
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


def _plain_containers(tree) -> bool:
  """Whether ``tree`` is nested dicts (str or int keys), lists and tuples
  of arrays: what the header writes as a tree."""
  if type(tree) is dict:  # pylint: disable=unidiomatic-typecheck
    return all(isinstance(k, (str, int)) and not isinstance(k, bool) and
               _plain_containers(v) for k, v in tree.items())
  if type(tree) in (list, tuple):  # not a NamedTuple
    return all(_plain_containers(v) for v in tree)
  return sparse.is_sparse(tree) or isinstance(tree, _NMKernel) or (
      hasattr(tree, 'shape') and hasattr(tree, 'dtype'))


def _encode(tree, arrays, entries, values_dtype):
  """The tree's structure as JSON, its leaves into ``arrays``/``entries``."""
  if type(tree) is dict:  # pylint: disable=unidiomatic-typecheck
    return {'dict': [[k, _encode(v, arrays, entries, values_dtype)]
                     for k, v in tree.items()]}
  if type(tree) in (list, tuple):
    return {type(tree).__name__: [_encode(v, arrays, entries, values_dtype)
                                  for v in tree]}
  i = len(entries)
  if isinstance(tree, _NMKernel):
    _encode_nm(i, tree, arrays, entries, values_dtype)
    return {'leaf': i}
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
  array = np.asarray(tree)
  arrays[str(i)] = _bits(array)
  entries.append({'kind': 'dense', 'shape': list(array.shape),
                  'dtype': array.dtype.name, 'stored_dtype': array.dtype.name})
  return {'leaf': i}


def _index_bits(m: int) -> int:
  return max(1, (m - 1).bit_length())


def _encode_nm(i, kernel, arrays, entries, values_dtype):
  """N values a block (the stored bit patterns first, then zeros to make
  up N, each in index order) and their in-block indices, bit-packed."""
  n, m = kernel.pattern.n, kernel.pattern.m
  array = kernel.array
  moved = np.moveaxis(array, kernel.axis, -1)
  blocks = moved.reshape(-1, m)
  stored = _bits(np.ascontiguousarray(blocks)) != 0
  index = np.sort(np.argsort(~stored, axis=1, kind='stable')[:, :n], axis=1)
  dtype = np.dtype(values_dtype or array.dtype)
  values = np.take_along_axis(blocks, index, axis=1).astype(dtype)
  bits = _index_bits(m)
  unpacked = (index[..., None] >> np.arange(bits - 1, -1, -1)) & 1
  arrays[f'{i}.values'] = _bits(np.ascontiguousarray(values.reshape(-1)))
  arrays[f'{i}.indices'] = np.packbits(unpacked.reshape(-1).astype(np.uint8))
  entries.append({'kind': 'nm', 'n': n, 'm': m, 'axis': kernel.axis,
                  'shape': list(array.shape), 'dtype': array.dtype.name,
                  'stored_dtype': dtype.name})


def _decode_nm(i, entry, arrays):
  n, m, axis = entry['n'], entry['m'], entry['axis']
  shape, dtype = tuple(entry['shape']), jnp.dtype(entry['dtype'])
  values = _from_bits(arrays[f'{i}.values'], entry['stored_dtype']).astype(
      dtype).reshape(-1, n)
  bits = _index_bits(m)
  unpacked = np.unpackbits(arrays[f'{i}.indices'])[:values.size * bits]
  index = (unpacked.reshape(-1, n, bits).astype(np.int64) <<
           np.arange(bits - 1, -1, -1)).sum(-1)
  blocks = np.zeros((values.shape[0], m), dtype)
  np.put_along_axis(blocks, index, values, axis=1)
  moved_shape = shape[:axis] + shape[axis + 1:] + (shape[axis],)
  return np.ascontiguousarray(
      np.moveaxis(blocks.reshape(moved_shape), -1, axis))


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
  if entry['kind'] == 'nm':  # no N:M matmul in JAX: dense
    return _decode_nm(i, entry, arrays)
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


def _unflatten_like(path, stored_paths, leaves, like):
  """A file of another pytree's leaves, as ``like``'s pytree (or a dict
  from path to leaf without ``like``)."""
  if like is None:
    return dict(zip(stored_paths, leaves))
  want, treedef = jax.tree_util.tree_flatten_with_path(like)
  paths = [jax.tree_util.keystr(p) for p, _ in want]
  if paths != stored_paths:
    raise ValueError(
        f'{path}: holds the leaves {stored_paths}, `like` has {paths}. Pass '
        'the same kind of pytree that was saved (e.g. '
        '`eqx.filter(model, eqx.is_array)`), or save it again.')
  for name, a, (_, b) in zip(paths, leaves, want):
    if tuple(a.shape) != tuple(np.shape(b)):
      raise ValueError(
          f'{path}: {name} has shape {tuple(a.shape)} in the file but '
          f'{tuple(np.shape(b))} in `like`. Load the file written for this '
          "model, or save this model's params again.")
  return jax.tree.unflatten(treedef, leaves)


def _check_like(path, params, like):
  got = jax.tree_util.tree_flatten_with_path(params, is_leaf=sparse.is_sparse)
  want = jax.tree_util.tree_flatten_with_path(like)
  if got[1] != want[1]:
    got_paths = [jax.tree_util.keystr(p) for p, _ in got[0]]
    want_paths = [jax.tree_util.keystr(p) for p, _ in want[0]]
    only_file = sorted(set(got_paths) - set(want_paths))
    only_like = sorted(set(want_paths) - set(got_paths))
    what = []
    if only_file:
      what.append(f'{only_file[0]} is in the file, not in `like`')
    if only_like:
      what.append(f'{only_like[0]} is in `like`, not in the file')
    what = '; '.join(what) or 'the same leaves in other containers'
    raise ValueError(
        f'{path}: its params have another structure than `like` (the first '
        f'difference: {what}; {len(only_file)} leaves only in the file, '
        f'{len(only_like)} only in `like`). Load the file written for this '
        "model, or save this model's params again.")
  for (p, a), (_, b) in zip(got[0], want[0]):
    if tuple(a.shape) != tuple(np.shape(b)):
      raise ValueError(
          f'{path}: {jax.tree_util.keystr(p)} has shape {tuple(a.shape)} in '
          f'the file but {tuple(np.shape(b))} in the model. Load the file '
          "written for this model, or save this model's params again.")
