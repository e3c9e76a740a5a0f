"""Streamed datasets (ImageNet) through Grain: decoding in worker processes,
each JAX process reading its own shard, a deterministic order from the seed.

`loader` builds a `grain.DataLoader` over a ``tfds.data_source``: an index
sampler shuffled from ``seed`` and sharded by JAX process
(`grain.ShardByJaxProcess`), the examples' augmentation (random-resized
crop and flip for training, resize and center crop for evaluation) as a
Grain transform, and batches of this process's share of the global batch.
Its iterator has ``get_state`` / ``set_state``, which restart it at the
next batch (tested on ``tfds.testing.mock_data``).
"""

import dataclasses

from absl import flags
import grain.python as grain
import jax
import numpy as np

from examples.paper import input_pipeline


class Indexed:
  """A random-access source whose records carry their own index."""

  def __init__(self, source):
    self.source = source

  def __len__(self):
    return len(self.source)

  def __getitem__(self, index):
    return dict(self.source[index], index=index)

  def __repr__(self):  # Grain checks a restored state against it
    return f'Indexed({self.source!r})'


@dataclasses.dataclass(frozen=True)
class Augment(grain.MapTransform):
  """Training augmentation of one record. Its rng comes from the seed and
  the record's index, so the crops do not depend on how many workers
  decode (Grain's own per-worker rngs would)."""
  size: int
  seed: int

  def map(self, record):
    rng = np.random.default_rng([self.seed, int(record['index'])])
    image = _rgb(record['image'])
    image = input_pipeline.random_resized_crop(image, self.size, rng)
    if rng.random() < 0.5:
      image = image[:, ::-1]
    return {'image': np.ascontiguousarray(image, np.uint8),
            'label': np.int32(record['label'])}


@dataclasses.dataclass(frozen=True)
class CenterCrop(grain.MapTransform):
  """Evaluation: resize the shorter side, crop the center."""
  size: int

  def map(self, record):
    image = input_pipeline.center_crop(_rgb(record['image']), self.size)
    return {'image': image.astype(np.uint8), 'label': np.int32(record['label'])}


def _rgb(image):
  image = np.asarray(image)
  if image.ndim == 2 or image.shape[-1] == 1:
    image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)
  return image


def loader(source, global_batch_size, size, seed, train=True, workers=0,
           shard=None):
  """A `grain.DataLoader` of this process's batches, one epoch.

  Args:
    source: a random-access source (``tfds.data_source``).
    global_batch_size: the batch over all processes; each gets its share.
    size: the image side after cropping.
    seed: the order and the augmentation follow from it.
    train: shuffle and augment (else: in order, center crops, and the last
      partial batch kept).
    workers: decoding processes (0: in this process).
    shard: `grain.ShardOptions`; default one shard per JAX process.

  Returns:
    The loader; iterate it for ``{'image': uint8 NHWC, 'label': int32}``.
  """
  if workers and not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # Grain's workers read its absl flags
  shard = shard or grain.ShardByJaxProcess(drop_remainder=train)
  per_process = global_batch_size // shard.shard_count
  sampler = grain.IndexSampler(num_records=len(source), shard_options=shard,
                               shuffle=train, num_epochs=1, seed=seed)
  operations = [Augment(size, seed) if train else CenterCrop(size),
                grain.Batch(per_process, drop_remainder=train)]
  return grain.DataLoader(data_source=Indexed(source), sampler=sampler,
                          operations=operations, worker_count=workers)


def epoch_seed(key) -> int:
  """A Grain seed from the epoch's JAX key."""
  return int(np.asarray(jax.random.key_data(key)).ravel()[-1]) % (2**31)
