"""Datasets: in memory (idx files, small TFDS datasets) or streamed (ImageNet).

Small datasets (MNIST, Fashion-MNIST, CIFAR-10) are loaded once as uint8
arrays and kept on the device. ImageNet is read from ``tfds.data_source``
through Grain (`grain_pipeline`) with the standard augmentation, defined
here: an Inception-style random-resized crop and a horizontal flip for
training, and a resize of the shorter side to 256/224 of the crop plus a
center crop for evaluation.
"""

import gzip
import os
import struct

import numpy as np
from PIL import Image

STREAMED = ('imagenet2012',)

# Where idx files are found when config.data_dir is not set, per dataset
# (Debian's dataset-fashion-mnist; Debian packages no MNIST).
IDX_DIRS = {'fashion_mnist': ('/usr/share/datasets/fashion-mnist',),
            'mnist': ('/usr/share/datasets/mnist',)}
# Each dataset's pixel mean and std (of [0, 1] values), for configs whose
# ``normalize`` is None: so --config.dataset=mnist normalizes as MNIST.
NORMALIZE = {'mnist': (0.1307, 0.3081),
             'fashion_mnist': (0.2860, 0.3530),
             'cifar10': ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
             'synthetic': (0.5, 0.2887)}  # uniform bytes (`synthetic`)
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
  try:
    source = tfds.data_source(name, split=split)
  except Exception as e:  # pylint: disable=broad-except
    hint = (' On Debian/Ubuntu: `sudo apt-get install dataset-fashion-mnist`, '
            'or set --config.data_dir to a folder of MNIST-format idx files.'
            if name in IDX_DIRS else '')
    raise RuntimeError(
        f'tensorflow_datasets could not load {name!r} split {split!r} '
        f'({type(e).__name__}: {e}); TFDS needs the dataset prepared under '
        f'~/tensorflow_datasets or a network to download it.{hint}') from e
  records = [source[i] for i in range(len(source))]
  images = np.stack([r['image'] for r in records]).astype(np.uint8)
  labels = np.array([r['label'] for r in records], np.int32)
  return images, labels


def default_idx_dir(data_dir: str | None, dataset: str) -> str | None:
  if data_dir is not None:
    return data_dir or None
  return next((d for d in IDX_DIRS.get(dataset, ()) if os.path.isdir(d)),
              None)


def normalization(config):
  """``(mean, std)``: ``config.normalize``, or the dataset's own if None."""
  if config.normalize is not None:
    return config.normalize
  if config.dataset not in NORMALIZE:
    raise ValueError(f'config.normalize is None, and {config.dataset!r} has '
                     f'no known mean and std (known: {sorted(NORMALIZE)}); '
                     'set config.normalize=(mean, std).')
  return NORMALIZE[config.dataset]


def load_split(config, split: str) -> tuple[np.ndarray, np.ndarray]:
  """The split named by ``config.dataset``, from idx files when configured."""
  idx_dir = (default_idx_dir(config.data_dir, config.dataset)
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


def data_source(name: str, split: str):
  """Random access to a TFDS dataset (no TensorFlow needed)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  return tfds.data_source(name, split=split)


def random_resized_crop(image, size, rng, area=(0.08, 1.0),
                        aspect=(3 / 4, 4 / 3)):
  """Inception-style crop of a random area and aspect, resized to size^2."""
  h, w = image.shape[:2]
  for _ in range(10):
    target = rng.uniform(*area) * h * w
    ratio = np.exp(rng.uniform(np.log(aspect[0]), np.log(aspect[1])))
    cw, ch = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(
        target / ratio)))
    if 0 < cw <= w and 0 < ch <= h:
      top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
      break
  else:  # fall back to a center crop of the whole image
    ch = cw = min(h, w)
    top, left = (h - ch) // 2, (w - cw) // 2
  crop = Image.fromarray(image[top:top + ch, left:left + cw])
  return np.asarray(crop.resize((size, size), Image.BILINEAR))


def center_crop(image, size):
  """Resize the shorter side to size * 256 / 224, then crop the center."""
  h, w = image.shape[:2]
  scale = size * 256 / 224 / min(h, w)
  resized = Image.fromarray(image).resize(
      (max(size, round(w * scale)), max(size, round(h * scale))),
      Image.BILINEAR)
  x = np.asarray(resized)
  top, left = (x.shape[0] - size) // 2, (x.shape[1] - size) // 2
  return x[top:top + size, left:left + size]
