"""Batches for training and evaluation, each process loading only its share.

In-memory datasets (MNIST-sized, from idx files or TFDS) are kept on the
device and batches gathered there; streamed ones (ImageNet) are read and
augmented on the host. `global_batch` assembles the processes' shares into
arrays split over the mesh.
"""

from functools import partial

import grain.python as grain
import jax
import jax.numpy as jnp
import numpy as np

from examples.paper import grain_pipeline
from examples.paper import input_pipeline
from examples.paper import sharding


class InMemoryData:
  """A small dataset kept on the device; batches are gathered there."""

  def __init__(self, config):
    images, labels = input_pipeline.load_split(config, 'train')
    holdout = int(round(config.get('holdout_fraction', 0.0) * len(images)))
    if holdout:  # evaluate on the last training examples, never on test
      if not 0 < holdout < len(images):
        raise ValueError(f'config.holdout_fraction='
                         f'{config.holdout_fraction} must be in (0, 1).')
      self.test_images, self.test_labels = images[-holdout:], labels[-holdout:]
      images, labels = images[:-holdout], labels[:-holdout]
    else:
      self.test_images, self.test_labels = input_pipeline.load_split(
          config, 'test')
    self.images, self.labels = jnp.asarray(images), jnp.asarray(labels)
    self.batch_size = config.batch_size
    self.steps_per_epoch = len(images) // config.batch_size

  def train_batches(self, key, start=0):
    """This process's share of the epoch's batches, in an order from
    ``key``, from batch ``start`` on."""
    order = _shuffled_batches(key, self.images.shape[0], self.steps_per_epoch,
                              self.batch_size)
    for i in range(start, self.steps_per_epoch):
      yield _gather(self.images, self.labels, process_share(order[i]))

  def checkpoint_args(self, batches, restore=False):
    """None: the order follows from the key, the position from the step."""
    del batches, restore
    return None

  def test_batches(self, batch_size):
    for i in range(0, len(self.test_images), batch_size):
      share = process_share(np.arange(i, min(i + batch_size,
                                             len(self.test_images))))
      yield self.test_images[share], self.test_labels[share]


def process_share(indices):
  """The slice of a global batch that this process loads (multi-host)."""
  n = len(indices) // jax.process_count()
  return indices[jax.process_index() * n:(jax.process_index() + 1) * n]


@partial(jax.jit, static_argnums=(1, 2, 3))
def _shuffled_batches(key, num_examples, steps, batch_size):
  order = jax.random.permutation(key, num_examples)
  return order[:steps * batch_size].reshape(steps, batch_size)


@jax.jit
def _gather(images, labels, indices):
  return images[indices], labels[indices]


class StreamedData:
  """A large TFDS dataset (ImageNet) read through Grain: decoding and
  augmentation in ``config.grain_workers`` processes, each JAX process
  reading its own shard (`grain_pipeline`)."""

  def __init__(self, config):
    self.train = input_pipeline.data_source(config.dataset, 'train')
    self.test = input_pipeline.data_source(config.dataset, 'validation')
    self.size = config.image_shape[0]
    self.batch_size = config.batch_size
    self.workers = config.get('grain_workers', 0)
    self.steps_per_epoch = len(self.train) // config.batch_size

  def train_batches(self, key, start=0):
    """This process's share of the epoch's batches. From ``start > 0`` on,
    the iterator's state must be restored first (`checkpoint_args`)."""
    loader = grain_pipeline.loader(self.train, self.batch_size, self.size,
                                   grain_pipeline.epoch_seed(key),
                                   workers=self.workers)
    return _GrainBatches(iter(loader), start)

  def checkpoint_args(self, batches, restore=False):
    """Orbax args that save (or restore) the Grain iterator's state."""
    batches.restored |= restore
    return (grain.PyGrainCheckpointRestore if restore else
            grain.PyGrainCheckpointSave)(batches.iterator)

  def test_batches(self, batch_size):
    for batch in grain_pipeline.loader(self.test, batch_size, self.size, 0,
                                       train=False, workers=self.workers):
      yield batch['image'], batch['label']


class _GrainBatches:
  """(image, label) pairs from a Grain iterator, which holds the position."""

  def __init__(self, iterator, start):
    self.iterator, self.start, self.restored = iterator, start, False

  def __iter__(self):
    if self.start and not self.restored:
      raise RuntimeError(
          f'Resuming at batch {self.start} needs the Grain iterator state: '
          'restore it through StreamedData.checkpoint_args(batches, '
          'restore=True) before iterating.')
    for batch in self.iterator:
      yield batch['image'], batch['label']


def load_data(config):
  if config.dataset in input_pipeline.STREAMED:
    if config.get('holdout_fraction'):
      raise ValueError('config.holdout_fraction is for in-memory datasets; '
                       f'{config.dataset} has its own validation split.')
    return StreamedData(config)
  return InMemoryData(config)


def global_batch(arrays, mesh, pad=False):
  """Assembles each process's share into arrays split over the mesh.

  With ``pad``, the share is padded to a multiple of the local devices with
  zeros (images) and -1 (labels, which no prediction matches).
  """
  if mesh is None:
    return arrays
  target = sharding.batch_sharding(mesh)
  if pad:
    local = mesh.size // jax.process_count()
    images, labels = (np.asarray(x) for x in arrays)
    missing = -len(images) % local
    arrays = (np.concatenate([images, np.zeros((missing, *images.shape[1:]),
                                               images.dtype)]),
              np.concatenate([labels, np.full(missing, -1, labels.dtype)]))
  return tuple(_to_global(x, target) for x in arrays)


def _to_global(x, target):
  if isinstance(x, jax.Array) and jax.process_count() == 1:
    return jax.device_put(x, target)  # stays on the devices
  return jax.make_array_from_process_local_data(target, np.asarray(x))
