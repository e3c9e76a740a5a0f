"""The sparse file: round trip, its errors, and the bytes the report states."""

import io
import json
import os
import zipfile

import jax
import ml_dtypes
import numpy as np
import pytest

import gsm_optax
from gsm_optax._src.deploy import sparse_io


def sparse_array(rng, shape, density, dtype=np.float32):
  x = rng.normal(size=shape).astype(dtype)
  return np.where(rng.random(shape) < density, x, 0).astype(dtype)


def example_params(rng):
  weird = np.array([[np.nan, -0.0], [np.inf, 1e-40]], np.float32)
  return {
      'fc': {'kernel': sparse_array(rng, (64, 32), 0.05),
             'bias': rng.normal(size=32).astype(np.float32)},
      'conv': {'kernel': sparse_array(rng, (3, 3, 4, 8), 0.1,
                                      ml_dtypes.bfloat16)},
      'half': [sparse_array(rng, (20, 10), 0.1, np.float16),
               (np.ones((4, 4), np.float32),)],  # fully dense: stays dense
      'empty': np.zeros((0, 5), np.float32),
      'all_zero': np.zeros((6, 6), np.float32),
      'weird': weird,  # dense leaf: NaN, -0.0, denormal kept bit for bit
      'step': np.array(7, np.int32),
      'layers': {0: np.ones(2, np.float32), 1: {'w': np.eye(3, dtype=np.float32)}},
  }


def assert_bit_identical(a, b):
  la, ta = jax.tree.flatten(a)
  lb, tb = jax.tree.flatten(b)
  assert ta == tb
  for x, y in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    assert x.tobytes() == y.tobytes()


def test_round_trip_is_bit_exact_and_keeps_the_nesting(tmp_path):
  params = example_params(np.random.default_rng(0))
  path = str(tmp_path / 'model.npz')
  size = gsm_optax.save_sparse(path, params)
  assert size == os.path.getsize(path)
  loaded = gsm_optax.load_sparse(path)
  assert isinstance(loaded['half'], list) and isinstance(loaded['half'][1],
                                                         tuple)
  assert_bit_identical(loaded, params)
  as_sparse = gsm_optax.load_sparse(path, as_sparse=True)
  assert isinstance(as_sparse['fc']['kernel'], gsm_optax.SparseKernel)
  # Stored as CSR, but a conv kernel runs dense (`matmul_kernels`).
  assert isinstance(as_sparse['conv']['kernel'], np.ndarray)
  assert not isinstance(as_sparse['half'][1][0], gsm_optax.SparseKernel)
  assert_bit_identical(gsm_optax.to_dense(as_sparse), params)


def test_indices_take_the_smallest_type_and_the_header_says_so(tmp_path):
  params = {'w': sparse_array(np.random.default_rng(1), (300, 100), 0.02),
            'big': np.zeros((70_000, 2), np.float32)}
  params['big'][69_999, 1] = 1.0
  path = tmp_path / 'm.npz'
  gsm_optax.save_sparse(str(path), params)
  with zipfile.ZipFile(path) as archive:
    header = json.loads(archive.read('header.json'))
    arrays = {n: np.load(io.BytesIO(archive.read(n))) for n in
              archive.namelist() if n.endswith('.npy')}
  assert header['format'] == 'gsm_optax.sparse' and header['version'] == 1
  kinds = {e['kind'] for e in header['leaves']}
  assert kinds == {'csr'}
  # 'big' is leaf 0 (sorted keys): 70,000 columns need uint32 indices.
  assert arrays['0.indices.npy'].dtype == np.uint32
  assert arrays['1.indices.npy'].dtype == np.uint16  # 300 columns
  nnz = int(np.count_nonzero(params['w']))
  assert arrays['1.indptr.npy'].dtype == sparse_io.index_dtype(nnz)
  assert arrays['1.values.npy'].nbytes == 4 * nnz


def test_narrower_values_are_recorded_and_cast_back(tmp_path):
  params = {'w': sparse_array(np.random.default_rng(2), (50, 40), 0.05)}
  path = str(tmp_path / 'm.npz')
  gsm_optax.save_sparse(path, params, values_dtype='float16')
  with zipfile.ZipFile(path) as archive:
    entry = json.loads(archive.read('header.json'))['leaves'][0]
  assert entry['dtype'] == 'float32' and entry['stored_dtype'] == 'float16'
  loaded = gsm_optax.load_sparse(path)['w']
  assert loaded.dtype == np.float32
  np.testing.assert_array_equal(
      loaded, params['w'].astype(np.float16).astype(np.float32))
  with pytest.raises(ValueError, match='`values_dtype` must be a float'):
    gsm_optax.save_sparse(path, params, values_dtype='int8')


def test_load_errors_name_the_file_and_the_fix(tmp_path):
  params = example_params(np.random.default_rng(3))
  path = str(tmp_path / 'm.npz')
  gsm_optax.save_sparse(path, params)
  missing = str(tmp_path / 'nope.npz')
  with pytest.raises(FileNotFoundError, match=f'{missing}: no such file.*'
                     'save_sparse'):
    gsm_optax.load_sparse(missing)
  truncated = str(tmp_path / 'truncated.npz')
  with open(path, 'rb') as f:
    data = f.read()
  with open(truncated, 'wb') as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(ValueError, match=f'{truncated}: not a readable '
                     'gsm_optax sparse file.*save_sparse'):
    gsm_optax.load_sparse(truncated)
  other = str(tmp_path / 'v2.npz')
  with zipfile.ZipFile(path) as src, zipfile.ZipFile(other, 'w') as dst:
    for name in src.namelist():
      content = src.read(name)
      if name == 'header.json':
        header = json.loads(content)
        header['version'] = 2
        content = json.dumps(header)
      dst.writestr(name, content)
  with pytest.raises(ValueError, match=f'{other}: written in format version '
                     '2; this gsm_optax reads version 1'):
    gsm_optax.load_sparse(other)
  wrong = dict(params, fc={'kernel': np.zeros((32, 64), np.float32),
                           'bias': params['fc']['bias']})
  with pytest.raises(ValueError, match=r"m.npz: \['fc'\]\['kernel'\] has shape "
                     r'\(64, 32\) in the file but \(32, 64\) in the model'):
    gsm_optax.load_sparse(path, like=wrong)
  with pytest.raises(ValueError, match=r"m.npz: its params have another "
                     r"structure than `like` \(the first difference: "
                     r"\['all_zero'\] is in the file, not in `like`; 9 leaves "
                     r"only in the file, 0 only in `like`\)") as error:
    gsm_optax.load_sparse(path, like={'fc': params['fc']})
  assert len(str(error.value)) < 400  # the first difference, not a dump
  assert_bit_identical(gsm_optax.load_sparse(path, like=params), params)


def test_a_failed_save_leaves_the_last_good_file(tmp_path, monkeypatch):
  params = example_params(np.random.default_rng(4))
  path = str(tmp_path / 'm.npz')
  gsm_optax.save_sparse(path, params)
  good = open(path, 'rb').read()

  def broken_save(*args, **kwargs):
    raise OSError('disk full')

  monkeypatch.setattr(np, 'save', broken_save)
  with pytest.raises(OSError, match='disk full'):
    gsm_optax.save_sparse(path, {'w': np.ones((3, 3), np.float32)})
  monkeypatch.undo()
  with pytest.raises(ValueError, match='nnx.to_pure_dict'):
    gsm_optax.save_sparse(path, {'w': object()})
  assert open(path, 'rb').read() == good
  assert os.listdir(tmp_path) == ['m.npz']  # no temporary file left


def test_report_states_the_bytes_of_the_sparse_arrays(tmp_path):
  params = example_params(np.random.default_rng(5))
  report = gsm_optax.sparsity_report(params)
  assert report.dense_bytes == sum(np.asarray(x).nbytes
                                   for x in jax.tree.leaves(params))
  path = tmp_path / 'm.npz'
  gsm_optax.save_sparse(str(path), params)
  with zipfile.ZipFile(path) as archive:
    stored = sum(np.load(io.BytesIO(archive.read(n))).nbytes
                 for n in archive.namelist() if n.endswith('.npy'))
  assert report.sparse_bytes == stored
  assert (f'{report.dense_bytes:,} as dense arrays, {report.sparse_bytes:,} '
          'as save_sparse stores them') in str(report)


def test_as_sparse_gives_sparse_kernels_for_the_matmuls_alone(tmp_path):
  rng = np.random.default_rng(5)
  params = {'conv': {'kernel': sparse_array(rng, (3, 3, 4, 8), 0.1)},
            'fc': {'kernel': sparse_array(rng, (64, 32), 0.05),
                   'bias': np.zeros(32, np.float32)},
            'embed': {'embedding': sparse_array(rng, (50, 16), 0.05)},
            'attention': {'bias': sparse_array(rng, (4, 16), 0.05)}}
  path = str(tmp_path / 'm.npz')
  gsm_optax.save_sparse(path, params)
  with zipfile.ZipFile(path) as archive:
    kinds = [e['kind'] for e in json.loads(archive.read('header.json'))['leaves']]
  # Stored: every kernel as CSR (conv and embedding too); biases dense.
  assert sorted(kinds) == ['csr', 'csr', 'csr', 'dense', 'dense']
  loaded = gsm_optax.load_sparse(path, as_sparse=True)
  is_sparse = lambda x: isinstance(x, gsm_optax.SparseKernel)
  assert is_sparse(loaded['fc']['kernel'])
  for leaf in (loaded['conv']['kernel'], loaded['embed']['embedding'],
               loaded['attention']['bias']):
    assert isinstance(leaf, np.ndarray)
  np.testing.assert_array_equal(loaded['conv']['kernel'], params['conv']['kernel'])
  np.testing.assert_array_equal(loaded['fc']['kernel'].todense(),
                                params['fc']['kernel'])
  # The same rule as to_sparse's default, and `prunable` chooses otherwise.
  same = gsm_optax.to_sparse(params)
  assert jax.tree.map(is_sparse, same, is_leaf=is_sparse) == jax.tree.map(
      is_sparse, loaded, is_leaf=is_sparse)
  every = gsm_optax.load_sparse(path, as_sparse=True,
                                prunable=gsm_optax.default_prunable)
  assert is_sparse(every['conv']['kernel']) and is_sparse(
      every['embed']['embedding'])


def test_save_into_a_missing_folder_names_the_path_and_the_fix(tmp_path):
  path = str(tmp_path / 'no' / 'such' / 'm.npz')
  with pytest.raises(FileNotFoundError,
                     match=f"`path`='{path}' does not exist.*os.makedirs"):
    gsm_optax.save_sparse(path, {'w': np.eye(3, dtype=np.float32)})
  assert not os.path.exists(tmp_path / 'no')


def test_other_pytrees_come_back_through_like(tmp_path):
  eqx = pytest.importorskip('equinox')
  model = eqx.nn.MLP(12, 3, 8, depth=2, key=jax.random.key(0))
  params, static = eqx.partition(model, eqx.is_array)
  pruned, _ = gsm_optax.prune(params, ratio=10.0)
  path = str(tmp_path / 'mlp.npz')
  gsm_optax.save_sparse(path, pruned)
  back = gsm_optax.load_sparse(path, like=pruned)
  assert type(back) is type(pruned)
  assert_bit_identical(back, pruned)
  x = np.ones(12, np.float32)
  np.testing.assert_array_equal(eqx.combine(back, static)(x),
                                eqx.combine(pruned, static)(x))
  flat = gsm_optax.load_sparse(path)  # without like: path -> leaf
  assert '.layers[0].weight' in flat
  np.testing.assert_array_equal(flat['.layers[0].weight'],
                                pruned.layers[0].weight)
  with pytest.raises(ValueError, match='mlp.npz: holds the leaves'):
    gsm_optax.load_sparse(path, like={'w': np.ones(3)})
