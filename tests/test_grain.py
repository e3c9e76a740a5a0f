"""The Grain pipeline for streamed datasets, on tfds.testing.mock_data."""

import grain.python as grain
import numpy as np
import tensorflow_datasets as tfds

from examples.paper import grain_pipeline
from examples.paper import input_pipeline


def batches(loader_or_iterator):
  return [(b['image'].copy(), b['label'].copy()) for b in loader_or_iterator]


def source(num_examples):
  with tfds.testing.mock_data(num_examples=num_examples):
    return input_pipeline.data_source('imagenet2012', 'train')


def test_imagenet_batches_are_cropped_and_deterministic():
  with tfds.testing.mock_data(num_examples=6):
    src = input_pipeline.data_source('imagenet2012', 'train')
    a = batches(grain_pipeline.loader(src, 3, 48, seed=7))
    b = batches(grain_pipeline.loader(src, 3, 48, seed=7))
    c = batches(grain_pipeline.loader(src, 3, 48, seed=8))
    evaluation = batches(grain_pipeline.loader(src, 3, 48, 0, train=False))
  assert len(a) == 2 and a[0][0].shape == (3, 48, 48, 3)
  assert a[0][0].dtype == np.uint8 and a[0][1].dtype == np.int32
  for (x, y), (u, v) in zip(a, b):  # same seed: same order, same crops
    np.testing.assert_array_equal(x, u)
    np.testing.assert_array_equal(y, v)
  assert any(not np.array_equal(x, u) for (x, _), (u, _) in zip(a, c))
  assert evaluation[0][0].shape == (3, 48, 48, 3)
  labels = np.concatenate([y for _, y in evaluation])  # in order
  assert sorted(np.concatenate([y for _, y in a]).tolist()) == sorted(
      labels.tolist())


def test_each_process_reads_its_own_shard():
  with tfds.testing.mock_data(num_examples=16):
    src = input_pipeline.data_source('imagenet2012', 'train')
    shares = []
    for index in range(2):
      shard = grain.ShardOptions(shard_index=index, shard_count=2,
                                 drop_remainder=True)
      loader = grain_pipeline.loader(src, 8, 32, seed=3, shard=shard)
      shares.append([b for b in batches(loader)])
  assert [len(s) for s in shares] == [2, 2]  # 8 records each, 4 a batch
  assert all(x.shape[0] == 4 for s in shares for x, _ in s)
  # The two shards hold different records (the images differ).
  first = {x.tobytes() for x, _ in shares[0]}
  assert not first & {x.tobytes() for x, _ in shares[1]}


def test_resume_mid_epoch_continues_with_the_next_batch():
  with tfds.testing.mock_data(num_examples=12):
    src = input_pipeline.data_source('imagenet2012', 'train')
    straight = batches(grain_pipeline.loader(src, 2, 32, seed=5))
    iterator = iter(grain_pipeline.loader(src, 2, 32, seed=5))
    head = [next(iterator) for _ in range(2)]
    state = iterator.get_state()  # what a checkpoint would store
    resumed = iter(grain_pipeline.loader(src, 2, 32, seed=5))
    resumed.set_state(state)
    rest = batches(resumed)
  assert len(straight) == 6 and len(rest) == 4
  for (x, y), b in zip(straight[:2], head):
    np.testing.assert_array_equal(x, b['image'])
  for (x, y), (u, v) in zip(straight[2:], rest):
    np.testing.assert_array_equal(x, u)
    np.testing.assert_array_equal(y, v)


def test_worker_processes_decode_the_same_records_deterministically():
  # Each worker batches the records it decodes, so batches are made up
  # differently for each worker count; for a given count they are fixed,
  # and every count yields the same crops of the same records.
  with tfds.testing.mock_data(num_examples=8):
    src = input_pipeline.data_source('imagenet2012', 'train')
    inline = batches(grain_pipeline.loader(src, 4, 32, seed=1, workers=0))
    workers = batches(grain_pipeline.loader(src, 4, 32, seed=1, workers=2))
    again = batches(grain_pipeline.loader(src, 4, 32, seed=1, workers=2))
  assert len(inline) == len(workers) == 2
  for (x, y), (u, v) in zip(workers, again):
    np.testing.assert_array_equal(x, u)
    np.testing.assert_array_equal(y, v)
  crops = lambda bs: sorted(x[i].tobytes() for x, _ in bs for i in range(4))
  assert crops(inline) == crops(workers)
