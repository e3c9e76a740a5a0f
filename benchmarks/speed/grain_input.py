"""Images per second through the Grain input pipeline, 0 and 2 workers.

Usage: python -m benchmarks.speed.grain_input [--images 512] [--size 224]

ImageNet from ``tfds.testing.mock_data`` (random images of random sizes,
decoded by ``tfds.data_source``), through `examples.paper.grain_pipeline`
with the training augmentation (random-resized crop to ``size``, flip),
batches of 32; one epoch per worker count, timed from its first batch.
"""

import argparse
import time

import tensorflow_datasets as tfds

from examples.paper import grain_pipeline
from examples.paper import input_pipeline


def images_per_second(source, size, workers, batch=32):
  iterator = iter(grain_pipeline.loader(source, batch, size, seed=0,
                                        workers=workers))
  next(iterator)  # start-up: workers spawned, first batch decoded
  start, count = time.perf_counter(), 0
  for b in iterator:
    count += b['image'].shape[0]
  return count / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--images', type=int, default=512)
  parser.add_argument('--size', type=int, default=224)
  args = parser.parse_args()
  with tfds.testing.mock_data(num_examples=args.images):
    source = input_pipeline.data_source('imagenet2012', 'train')
    for workers in (0, 2):
      rate = images_per_second(source, args.size, workers)
      print(f'{workers} workers: {rate:.0f} images/s', flush=True)


if __name__ == '__main__':
  main()
