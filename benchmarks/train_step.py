"""Training-step time (forward, backward, update): GSM vs dense momentum SGD.

Usage: python -m benchmarks.train_step [--repeats 30]

The same jitted step of the examples (`examples.train.make_train_step`),
batch 256, for LeNet-300-100 and LeNet-5, with GSM (60x / 125x) or plain SGD
with decay. The two steps alternate, so both see the same machine load; the
table shows medians and their ratio.
"""

import argparse
import importlib
import json
import statistics
import time

import flax.nnx as nnx
import jax
import numpy as np

from examples import models
from examples import train

CASES = (('lenet300', 'lenet300_fmnist', 60.0), ('lenet5', 'lenet5_fmnist',
                                                   125.0))


def make(config, phase_index):
  model = models.create_model(config.model, 10, 0)
  phase = train.make_phases(config, 100, None)[phase_index]
  optimizer = nnx.Optimizer(model, phase.make_tx(), wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  return train.make_train_step(graphdef, config), state


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--repeats', type=int, default=30)
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  rows = []
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (256, 28, 28, 1), dtype=np.uint8)
  labels = rng.integers(0, 10, (256,)).astype(np.int32)
  key = jax.random.key(0)
  print(f'jax {jax.__version__}, {jax.devices()[0].device_kind}, batch 256')
  print(f"{'model':<10} {'ratio':>6} {'sgd step':>10} {'gsm step':>10} "
        f"{'gsm / sgd':>10}")
  for name, config_name, ratio in CASES:
    config = importlib.import_module(
        f'examples.configs.{config_name}').get_config()
    config.ratio = ratio
    (sgd, sgd_state), (gsm, gsm_state) = make(config, 0), make(config, 1)
    times = {'sgd': [], 'gsm': []}
    for i in range(args.repeats + 3):
      for label in ('sgd', 'gsm'):
        step, state = (sgd, sgd_state) if label == 'sgd' else (gsm, gsm_state)
        start = time.perf_counter()
        state, (loss, _) = step(state, images, labels, key)
        jax.block_until_ready(loss)
        if i >= 3:  # the first calls compile
          times[label].append(time.perf_counter() - start)
        if label == 'sgd':
          sgd_state = state
        else:
          gsm_state = state
    s, g = statistics.median(times['sgd']), statistics.median(times['gsm'])
    print(f'{name:<10} {ratio:>5g}x {s * 1e3:>8.2f}ms {g * 1e3:>8.2f}ms '
          f'{g / s:>9.2f}x', flush=True)
    rows.append({'model': name, 'ratio': ratio, 'sgd_seconds': s,
                 'gsm_seconds': g})
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'jax': jax.__version__, 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  main()
