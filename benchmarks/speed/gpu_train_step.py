"""The GPU check: GSM's training step against momentum SGD, on synthetic data.

Usage (on a machine with an accelerator; a few minutes):
  python -m benchmarks.speed.gpu_train_step --json gpu_train_step.json

Times the jitted training step (forward, backward, update) of ResNet-56
(batch 128, 32x32) and ResNet-50 (batch 64, 224x224) from the paper's
examples, GSM (ratio 10, the default route) against momentum SGD with the
same weight decay (the dense phase's optimizer), alternating them step by
step on the same synthetic batches: medians of ``--repeats`` steps after
compilation. Then the GSM optimizer step alone on the ResNet-50 tree for
every selection route (`step_overhead.time_tree`). The target is a
training step of at most 1.02x SGD's.
"""

import argparse
import itertools
import json

import flax.nnx as nnx
import jax
import numpy as np

from benchmarks.speed import step_overhead
from benchmarks.speed import trees
from examples.paper import models
from examples.paper import phases
from examples.paper import timing
from examples.paper import train
from examples.paper.configs import resnet50_imagenet
from examples.paper.configs import resnet56_cifar10

CASES = (('resnet56', resnet56_cifar10, 128, 32),
         ('resnet50', resnet50_imagenet, 64, 224))


def time_train_steps(config, batch, repeats):
  """Median seconds of the SGD and the GSM training step, alternated."""
  config.batch_size, config.ratio = batch, 10.0
  steps, states = {}, {}
  txs = {'sgd': phases.sgd_with_decay(config.gsm, 1000),
         'gsm': phases.gsm_with_ratio_warmup(config, 1000)}
  for name, tx in txs.items():
    model = models.create_model(config.model, config.num_classes, 0)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    graphdef, states[name] = nnx.split((model, optimizer))
    steps[name] = train.make_train_step(graphdef, config)
  rng = np.random.default_rng(0)
  size = config.image_shape[0]
  batches = [(jax.device_put(rng.integers(0, 256, (batch, size, size, 3),
                                          dtype=np.uint8)),
              jax.device_put(rng.integers(0, config.num_classes, batch,
                                          dtype=np.int32)))
             for _ in range(4)]
  key = jax.random.key(0)

  def call(name):
    def run(images, labels):  # the state moves on from step to step
      states[name], metrics = steps[name](states[name], images, labels, key)
      return metrics['loss']
    return run
  # Each step sees the same batches in the same order.
  return timing.median_seconds(
      {name: call(name) for name in steps}, repeats, warmup=3,
      setup={name: itertools.cycle(batches).__next__ for name in steps})


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--repeats', type=int, default=200)
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  device = f'{jax.devices()[0].device_kind} x{jax.device_count()}'
  print(f'device: {device}, jax {jax.__version__}', flush=True)
  rows = []
  for name, module, batch, size in CASES:
    config = module.get_config()
    config.gsm.track_churn = False  # the paper's step
    sec = time_train_steps(config, batch, args.repeats)
    rows.append({'model': name, 'batch': batch, 'image': size,
                 'seconds': sec})
    print(f"{name} batch {batch} {size}x{size}: SGD {sec['sgd'] * 1e3:.2f} ms,"
          f" GSM {sec['gsm'] * 1e3:.2f} ms, GSM / SGD "
          f"{sec['gsm'] / sec['sgd']:.3f}x", flush=True)
  n, sec = step_overhead.time_tree(trees.resnet50_shapes(), 10.0, 50,
                                   ('interpolate', 'bisect', 'top_k'))
  print(f"ResNet-50 tree ({n:,} params), optimizer step alone: SGD "
        f"{sec['sgd'] * 1e3:.2f} ms; " + ', '.join(
            f'{m} {sec[m] / sec["sgd"]:.2f}x' for m in sec if m != 'sgd'))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'device': device, 'jax': jax.__version__, 'rows': rows,
                 'optimizer_step': {'params': n, 'seconds': sec}}, f, indent=1)


if __name__ == '__main__':
  main()
