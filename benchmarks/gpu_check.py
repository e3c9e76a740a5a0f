"""The GPU check: everything that must be seen on an accelerator, one go.

Usage: ``bash benchmarks/gpu_check.sh [OUT_DIR]`` (or ``python -m
benchmarks.gpu_check --out OUT_DIR``), on a machine with a CUDA GPU and
jax's CUDA wheels (``pip install -e ".[test]" "jax[cuda12]"``); under 8
minutes there. It runs, each as its own process with a time limit:

- the selection tests with the Pallas radix kernel compiled for the GPU
  (``tests/test_pallas_radix.py``, ``tests/test_select.py``);
- GSM's training step against momentum SGD on ResNet-56 and ResNet-50
  (``benchmarks/speed/gpu_train_step.py``);
- the optimizer-step table (``benchmarks/speed/step_overhead.py``);
- the slim models' timings (``benchmarks/speed/slim.py``);
- one short training of ``examples/mnist_nnx`` (Fashion-MNIST's idx files
  in ``$FASHION_MNIST_DIR``, default Debian's directory; copy them there on
  a machine without Debian's ``dataset-fashion-mnist``);

and writes ``summary.json`` in OUT_DIR: the device, jax's version, and per
step its status (``ok``, ``failed`` or ``skipped`` with the reason), its
seconds, the end of its output and the JSON it wrote. On a machine without
a GPU it runs what runs on a CPU and skips the rest, saying so; ``--quick``
runs the CPU steps at their smallest (the test of this script).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import NamedTuple

import jax


class Step(NamedTuple):
  """One check: its name, its command (``{out}``: the output directory),
  the smaller command of ``--quick`` (None: skipped in quick mode), whether
  it needs a GPU, and its time limit in seconds."""
  name: str
  command: str
  quick: str | None
  needs_gpu: bool
  limit: int


STEPS = (
    Step('pallas_radix_on_hardware',
         'python -m pytest -q -p no:cacheprovider tests/test_pallas_radix.py '
         'tests/test_select.py', None, True, 150),
    Step('train_step_resnet',
         'python -m benchmarks.speed.gpu_train_step --repeats 50 '
         '--json {out}/gpu_train_step.json', None, True, 150),
    Step('optimizer_step_table',
         'python -m benchmarks.speed.step_overhead --repeats 15 '
         '--json {out}/step_overhead.json', None, False, 90),
    Step('slim_timings',
         'python -m benchmarks.speed.slim --repeats 30 --select uniform,rounded,latency --json {out}/slim.json',
         'python -m benchmarks.speed.slim --models lenet300 --ratios 2 '
         '--repeats 2 --json {out}/slim.json', False, 60),
    Step('mnist_nnx_short_training',
         'python -m examples.mnist_nnx.main --dense-epochs 1 --gsm-epochs 2 '
         '--out-dir {out}/mnist_nnx', None, False, 90),
)


def fashion_mnist_dir() -> str:
  from examples.mnist_nnx import train  # pylint: disable=import-outside-toplevel
  return train.idx_dir()


def run_step(step: Step, out: str, quick: bool, gpu: bool) -> dict:
  """One step's record (see the module's docstring)."""
  record = {'name': step.name, 'needs_gpu': step.needs_gpu}
  if step.needs_gpu and not gpu:
    return record | {'status': 'skipped', 'reason': (
        'no GPU here (jax.default_backend() is '
        f'{jax.default_backend()!r}): this step needs one')}
  if quick and step.quick is None:
    return record | {'status': 'skipped',
                     'reason': '--quick runs the CPU steps at their smallest '
                               'only'}
  if step.name == 'mnist_nnx_short_training' and not os.path.isdir(
      fashion_mnist_dir()):
    return record | {'status': 'skipped', 'reason': (
        f'no Fashion-MNIST idx files in {fashion_mnist_dir()}: set '
        'FASHION_MNIST_DIR to a directory holding them')}
  command = (step.quick if quick else step.command).format(out=out)
  start = time.perf_counter()
  try:
    argv = command.split()
    argv[0] = sys.executable if argv[0] == 'python' else argv[0]
    done = subprocess.run(argv, capture_output=True, text=True,
                          timeout=step.limit, check=False)
    status = 'ok' if done.returncode == 0 else 'failed'
    output = done.stdout + done.stderr
  except subprocess.TimeoutExpired as e:
    status, output = 'failed', f'timed out after {step.limit} s\n' + (
        (e.stdout or b'').decode(errors='replace') if isinstance(
            e.stdout, bytes) else (e.stdout or ''))
  record |= {'status': status, 'command': command,
             'seconds': round(time.perf_counter() - start, 1),
             'output_tail': output[-3000:]}
  written = [w for w in command.split() if w.endswith('.json')]
  if written and os.path.exists(written[0]):
    with open(written[0]) as f:
      record['result'] = json.load(f)
  return record


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default=os.environ.get('OUT') or
                      '/tmp/gpu_check')
  parser.add_argument('--quick', action='store_true',
                      help='the CPU steps at their smallest (for the test)')
  args = parser.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  gpu = jax.default_backend() == 'gpu'
  summary = {'device': f'{jax.devices()[0].device_kind} x{jax.device_count()}',
             'backend': jax.default_backend(), 'jax': jax.__version__,
             'python': sys.version.split()[0], 'machine': platform.machine(),
             'quick': args.quick, 'steps': []}
  for step in STEPS:
    record = run_step(step, args.out, args.quick, gpu)
    summary['steps'].append(record)
    print(f"{step.name}: {record['status']}"
          + (f" ({record['seconds']} s)" if 'seconds' in record else '')
          + (f": {record['reason']}" if 'reason' in record else ''),
          flush=True)
    path = os.path.join(args.out, 'summary.json')
    with open(path + '.tmp', 'w') as f:
      json.dump(summary, f, indent=1)
    os.replace(path + '.tmp', path)  # after every step: a timeout keeps it
  return int(any(r['status'] == 'failed' for r in summary['steps']))


if __name__ == '__main__':
  sys.exit(main())
