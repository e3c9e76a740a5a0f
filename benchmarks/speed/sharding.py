"""GSM optimizer step on the ResNet-50 tree, FSDP-sharded over 1-8 devices.

Usage: python -m benchmarks.speed.sharding [--devices 1,2,4,8] [--repeats 5]

Runs on 8 virtual CPU devices (sets XLA_FLAGS itself when unset). The
virtual devices share the machine's cores, so step times do not show a
speed-up; the table reports per-device memory from XLA's memory analysis and
the collectives in the compiled step (count and bytes moved per device).
"""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import re

import jax
from jax.sharding import Mesh
import numpy as np

from benchmarks.speed import step_overhead
from benchmarks.speed import trees
from examples.paper import sharding
import gsm_optax

_BYTES = {'f32': 4, 's32': 4, 'pred': 1, 'bf16': 2, 'f16': 2, 's64': 8,
          'f64': 8, 'u32': 4}


def collectives(hlo: str) -> dict[str, tuple[int, int]]:
  """{kind: (count, bytes of results per device)} of the compiled step."""
  out = {}
  kinds = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all',
           'collective-permute')
  for line in hlo.splitlines():
    for kind in kinds:
      m = re.search(rf' = (.*?) {kind}(?:-start)?\(', line)
      if not m:
        continue
      size = 0
      for dtype, dims in re.findall(r'(\w+)\[([\d,]*)\]', m.group(1)):
        n = int(np.prod([int(d) for d in dims.split(',') if d])) if dims else 1
        size += n * _BYTES.get(dtype, 4)
      count, total = out.get(kind, (0, 0))
      out[kind] = (count + 1, total + size)
  return out


def measure(num_devices, repeats, ratio=10.0):
  mesh = Mesh(np.array(jax.devices()[:num_devices]), ('data',))
  shapes = trees.resnet50_shapes()
  params = jax.tree.map(np.asarray, trees.random_tree(shapes, 0))
  grads = jax.tree.map(np.asarray, trees.random_tree(shapes, 1))
  tx = gsm_optax.gsm(0.01, ratio, momentum=0.9, weight_decay=1e-4)
  state = tx.init(params)
  (params, grads, state), _ = sharding.place((params, grads, state), mesh,
                                             'fsdp')

  jitted = step_overhead.make_step(tx)
  compiled = jitted.lower(params, state, grads).compile()
  memory = compiled.memory_analysis()
  comm = collectives(compiled.as_text())
  seconds = step_overhead.time_steps({'gsm': (jitted, params, state)}, grads,
                                     repeats)['gsm']
  return {'devices': num_devices, 'seconds': seconds,
          'argument_bytes': memory.argument_size_in_bytes,
          'temp_bytes': memory.temp_size_in_bytes,
          'output_bytes': memory.output_size_in_bytes, 'collectives': comm}


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--devices', default='1,2,4,8')
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  print(f'jax {jax.__version__}, {jax.device_count()} x '
        f'{jax.devices()[0].device_kind}; GSM step, ResNet-50 tree, FSDP')
  print(f"{'devices':>7} {'step':>9} {'args/dev':>10} {'temp/dev':>10} "
        f"{'collectives (count, bytes/dev)':<40}")
  for n in (int(d) for d in args.devices.split(',')):
    r = measure(n, args.repeats)
    comm = ', '.join(f'{k} x{c} {b / 1e3:.1f} kB'
                     for k, (c, b) in r['collectives'].items()) or 'none'
    print(f"{n:>7} {r['seconds'] * 1e3:>7.0f}ms "
          f"{r['argument_bytes'] / 2**20:>8.1f}MiB "
          f"{r['temp_bytes'] / 2**20:>8.1f}MiB {comm:<40}", flush=True)


if __name__ == '__main__':
  main()
