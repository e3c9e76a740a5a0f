"""The GPU check runs on a CPU: what needs a GPU is skipped, saying so, the
rest runs, and one JSON summary says which."""

import json
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).parent.parent


def test_the_gpu_check_runs_on_a_cpu_and_skips_what_needs_a_gpu(tmp_path):
  done = subprocess.run(
      ['bash', str(ROOT / 'benchmarks' / 'gpu_check.sh'), str(tmp_path),
       '--quick'], capture_output=True, text=True, check=False, cwd='/')
  assert done.returncode == 0, done.stdout + done.stderr
  summary = json.loads((tmp_path / 'summary.json').read_text())
  assert summary['backend'] == 'cpu' and summary['quick']
  steps = {s['name']: s for s in summary['steps']}
  assert set(steps) == {'pallas_radix_on_hardware', 'train_step_resnet',
                        'optimizer_step_table', 'slim_timings',
                        'mnist_nnx_short_training'}
  for name in ('pallas_radix_on_hardware', 'train_step_resnet'):
    assert steps[name]['status'] == 'skipped'
    assert 'no GPU here' in steps[name]['reason']
    assert f'{name}: skipped: no GPU here' in done.stdout
  slim = steps['slim_timings']
  assert slim['status'] == 'ok', slim['output_tail']
  rows = slim['result']['rows']
  assert rows and rows[0]['model'] == 'lenet300'
  assert rows[0]['budget_ratio'] == 2.0 and rows[0]['flops_ratio'] >= 2.0
  assert rows[0]['speedup']['256'] > 0
