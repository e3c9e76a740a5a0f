"""Datasets as in-memory uint8 arrays: MNIST-format idx files, or TFDS."""

import gzip
import os
import struct

import numpy as np

IDX_DIRS = ('/usr/share/datasets/fashion-mnist',)
IDX_FILES = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
             'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}
_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: str) -> np.ndarray:
  """Reads one MNIST-format idx file (optionally gzipped)."""
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rb') as f:
    data = f.read()
  if len(data) < 4:
    raise ValueError(f'{path}: not an idx file (only {len(data)} bytes).')
  zero, dtype_code, ndim = struct.unpack('>HBB', data[:4])
  if zero != 0 or dtype_code not in _IDX_DTYPES:
    raise ValueError(f'{path}: bad idx magic number; expected unsigned-byte '
                     'MNIST-format data.')
  shape = struct.unpack(f'>{ndim}I', data[4:4 + 4 * ndim])
  body = data[4 + 4 * ndim:]
  expected = int(np.prod(shape))
  if len(body) != expected:
    raise ValueError(f'{path}: truncated or corrupt: header says {shape} '
                     f'({expected} bytes) but {len(body)} bytes follow. '
                     'Download the file again.')
  return np.frombuffer(body, np.uint8).reshape(shape)


def _find(directory, name):
  for candidate in (name, name + '.gz'):
    path = os.path.join(directory, candidate)
    if os.path.exists(path):
      return path
  return None


def load_idx(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Images (N, 28, 28, 1) uint8 and labels (N,) from an idx directory."""
  paths = [_find(directory, n) for n in IDX_FILES[split]]
  if None in paths:
    raise FileNotFoundError(
        f'No MNIST-format {split} files ({", ".join(IDX_FILES[split])}[.gz]) '
        f'in {directory!r}. On Debian/Ubuntu: `sudo apt-get install '
        'dataset-fashion-mnist`; or set --config.data_dir to a folder holding '
        "MNIST/Fashion-MNIST idx files; or set --config.data_dir='' to read "
        'the dataset with tensorflow_datasets.')
  images, labels = (read_idx(p) for p in paths)
  return images[..., None], labels.astype(np.int32)


def load_tfds(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """All of one TFDS split as arrays (suits MNIST/CIFAR-sized datasets)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  source = tfds.data_source(name, split=split)
  records = [source[i] for i in range(len(source))]
  images = np.stack([r['image'] for r in records]).astype(np.uint8)
  labels = np.array([r['label'] for r in records], np.int32)
  return images, labels


def default_idx_dir(data_dir: str | None) -> str | None:
  if data_dir is not None:
    return data_dir or None
  return next((d for d in IDX_DIRS if os.path.isdir(d)), None)


def load_split(config, split: str) -> tuple[np.ndarray, np.ndarray]:
  """The split named by ``config.dataset``, from idx files when configured."""
  idx_dir = (default_idx_dir(config.data_dir)
             if config.dataset in ('mnist', 'fashion_mnist') else None)
  if config.dataset == 'synthetic':
    return synthetic(config, split)
  if idx_dir:
    return load_idx(idx_dir, split)
  return load_tfds(config.dataset, split)


def synthetic(config, split):
  """Random images with learnable labels, for tests and smoke runs."""
  rng = np.random.default_rng(0 if split == 'train' else 1)
  n = config.synthetic_size if split == 'train' else config.synthetic_size // 4
  images = rng.integers(0, 256, size=(n, *config.image_shape), dtype=np.uint8)
  labels = (images.reshape(n, -1)[:, :16].mean(axis=1) >
            127.5).astype(np.int32) % config.num_classes
  return images, labels
