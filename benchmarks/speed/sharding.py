"""GSM optimizer step on the ResNet-50 tree, FSDP-sharded over 1-8 devices.

Usage: python -m benchmarks.speed.sharding [--devices 1,2,4,8] [--repeats 5]

Runs on 8 virtual CPU devices (sets XLA_FLAGS itself when unset). The
virtual devices share the machine's cores, so step times do not show a
speed-up; the table reports per-device memory from XLA's memory analysis and
the collectives in the compiled step (count and bytes moved per device);
then, per selection route, the passes its search makes and the all-reduces
of the compiled update (`collective_rounds`), outside loops and per loop
iteration (outside loops: on the fewest-most paths through conditionals,
where they differ), and the all-reduces of a step at that many passes (at
most: a pass is one iteration of one loop).
"""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import functools
import re
from typing import NamedTuple

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


class Rounds(NamedTuple):
  """The all-reduces of a compiled step.

  ``outside``: those outside any loop, on the longest path (through a
  conditional, its branch with the most); ``per_iteration``: for each
  while loop, those one iteration makes at most; ``fewest``: those outside
  any loop on the shortest path (through a conditional, its branch with the
  fewest; the sampled radix route's usual path). A step whose loops run
  ``n`` iterations in all makes at most ``outside + max(per_iteration) *
  n``.
  """
  outside: int
  per_iteration: tuple[int, ...]
  fewest: int


def _computations(hlo: str):
  comps, entry = {}, None
  for block in re.split(r'\n(?=\S)', hlo):
    m = re.match(r'(ENTRY )?(%?[\w.\-]+)', block)
    if m and '{' in block.split('\n', 1)[0]:
      comps[m.group(2)] = block.split('\n')[1:]
      entry = m.group(2) if m.group(1) else entry
  return comps, entry


def collective_rounds(hlo: str) -> Rounds:
  """`Rounds` of the compiled HLO text ``hlo`` (``compiled.as_text()``)."""
  comps, entry = _computations(hlo)
  loops = []

  @functools.cache
  def count(name):  # (most, fewest) outside loops
    most = fewest = 0
    for line in comps[name]:
      here = bool(re.search(r' all-reduce(?:-start)?\(', line))
      most, fewest = most + here, fewest + here
      body = re.search(r' while\(.*body=(%?[\w.\-]+)', line)
      branches = re.search(r'branch_computations=\{([^}]*)\}', line)
      if body:
        loops.append(count(body.group(1))[0])
      elif branches:
        paths = [count(c.strip()) for c in branches.group(1).split(',')]
        most += max(p[0] for p in paths)
        fewest += min(p[1] for p in paths)
      elif ' fusion(' in line or ' call(' in line:
        for c in re.findall(r'calls=(%?[\w.\-]+)', line):
          most, fewest = most + count(c)[0], fewest + count(c)[1]
    return most, fewest

  most, fewest = count(entry)
  return Rounds(most, tuple(loops), fewest)


def route_rounds(tree, mesh, ratio=10.0):
  """{route: (passes, Rounds, collectives)} of `keep_top_taylor`'s update on
  ``tree`` (its own scores) FSDP-sharded over ``mesh``: the passes the
  search makes (`TopQ.passes`), the all-reduces of the compiled update
  (`collective_rounds`) and all its collectives (`collectives`)."""
  from gsm_optax._src.selection import search  # pylint: disable=import-outside-toplevel
  placed, _ = sharding.place(tree, mesh, 'fsdp')
  kernels = [jax.numpy.abs(x * x) for x, prunable in zip(
      jax.tree.leaves(tree), jax.tree.leaves(gsm_optax.default_prunable(tree)))
             if prunable]
  q = gsm_optax.num_to_keep(sum(x.size for x in kernels), ratio)
  out = {}
  for route in gsm_optax.SELECTION_METHODS:
    tx = gsm_optax.keep_top_taylor(ratio, method=route)
    hlo = jax.jit(tx.update).lower(placed, tx.init(placed),
                                   placed).compile().as_text()
    passes = jax.jit(lambda s, r=route: search.select_top_q(s, q, r).passes)
    out[route] = (int(passes(kernels)), collective_rounds(hlo),
                  collectives(hlo))
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
  devices = [int(d) for d in args.devices.split(',')]
  for n in devices:
    r = measure(n, args.repeats)
    comm = ', '.join(f'{k} x{c} {b / 1e3:.1f} kB'
                     for k, (c, b) in r['collectives'].items()) or 'none'
    print(f"{n:>7} {r['seconds'] * 1e3:>7.0f}ms "
          f"{r['argument_bytes'] / 2**20:>8.1f}MiB "
          f"{r['temp_bytes'] / 2**20:>8.1f}MiB {comm:<40}", flush=True)
  mesh = Mesh(np.array(jax.devices()[:max(devices)]), ('data',))
  print(f'\nper selection route, keep_top_taylor at 10x on {mesh.size} devices '
        '(all-reduces per step: outside loops + per iteration x passes, at most):')
  print(f"{'route':<12} {'passes':>6} {'outside':>8} {'per iter':>9} "
        f"{'per step':>9}  collectives in the HLO")
  tree = jax.tree.map(np.asarray, trees.random_tree(trees.resnet50_shapes(), 0))
  for route, (passes, rounds, kinds) in route_rounds(tree, mesh).items():
    per_iter = '+'.join(map(str, rounds.per_iteration)) or '-'
    outside = (f'{rounds.fewest}-{rounds.outside}'
               if rounds.fewest != rounds.outside else f'{rounds.outside}')
    if rounds.per_iteration:
      per_step = '<= ' + str(rounds.outside + max(rounds.per_iteration) *
                             passes)
    else:  # no loop: the path taken, from the fewest to the most
      per_step = outside
    comm = ', '.join(f'{k} x{c}' for k, (c, _) in kinds.items())
    print(f'{route:<12} {passes:>6} {outside:>8} {per_iter:>9} '
          f'{per_step:>9}  {comm}', flush=True)


if __name__ == '__main__':
  main()
