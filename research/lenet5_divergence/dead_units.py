"""Dead ReLU units of LeNet-5's fc1 in saved models (a diagnostic).

Usage:
  python -m research.lenet5_divergence.dead_units WORKDIR:PHASE [WORKDIR:PHASE ...]

e.g. ``runs/benchmarks/lenet5/s0/gsm_r30:gsm``. A unit is dead when its
ReLU output is 0 for each of the first 10,000 Fashion-MNIST training images:
its weights then get no gradient, so their Taylor scores |g·w| are 0.

The README's numbers (2026-11-21, 2-core CPU): GSM at 10× and 30× for 7
epochs of the LeNet-5 benchmark's schedule, from the seed-0 dense model of
``python -m benchmarks.accuracy.run --part comparison --models lenet5 --seeds 0
--ratios 125 --methods gsm``::

  for r in 10 30; do python -m examples.paper.main \
    --config examples/paper/configs/lenet5_fmnist.py --workdir runs/diag/dead_r$r \
    --config.ratio=$r --config.dense.epochs=8 \
    --config.dense.decay_epochs="(4,6)" --config.gsm.epochs=7 \
    --config.gsm.decay_epochs="(11,14)" \
    --config.dense_from=runs/benchmarks/lenet5/s0/gsm_r125; done
  python -m research.lenet5_divergence.dead_units runs/diag/dead_r10:gsm \
    runs/diag/dead_r30:gsm runs/diag/lenet5_gsm_r10_lr0.01:gsm \
    runs/benchmarks/lenet5/s0/gsm_r125:dense

(the lr 1e-2 run is the diagnostic in benchmarks/RESULTS.md.) The baselines
at 10x, at the end of their 16 epochs in the seed-0 benchmark::

  python -m research.lenet5_divergence.dead_units \
    runs/benchmarks/lenet5/s0/gradual_magnitude_r10:gradual_magnitude \
    runs/benchmarks/lenet5/s0/magnitude_ft_r10:magnitude_ft

(At high ratios a unit also dies when its incoming weights are pruned, so
counts there mix both causes.)
"""

import sys

import jax.numpy as jnp

from examples.paper import checkpoints
from examples.paper import input_pipeline
from examples.paper import train
from examples.paper.configs import lenet5_fmnist

DATA_DIR = '/usr/share/datasets/fashion-mnist'


def dead_units(model, images, config):
  """Number of fc1 units of a `models.LeNet5` that are 0 on all ``images``.

  Args:
    model: a `models.LeNet5`.
    images: uint8 array (N, 28, 28, 1).
    config: the run's config (its ``normalize`` is used, as in training).

  Returns:
    The count of fc1 units whose pre-activation is <= 0 on every image.
  """
  h = model.fc1_preactivation(train.preprocess(jnp.asarray(images), config))
  return int(jnp.sum(~jnp.any(h > 0, axis=0)))


def main(argv):
  config = lenet5_fmnist.get_config()
  images, _ = input_pipeline.load_idx(DATA_DIR, 'train')
  for spec in argv:
    workdir, phase = spec.rsplit(':', 1)
    model = checkpoints.Snapshots(workdir).load(phase, config)
    count = dead_units(model, images[:10_000], config)
    print(f'{spec}: {count} of {model.fc1.out_features} fc1 units dead')


if __name__ == '__main__':
  main(sys.argv[1:])
