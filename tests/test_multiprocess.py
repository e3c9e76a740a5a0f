"""GSM trained by 2 processes x 4 virtual CPU devices, one 8-device mesh.

Each run starts two `multiprocess_worker.py` processes that meet at a
loopback coordinator on a free port and use JAX's CPU (gloo) collectives.
The test checks that they train what one process with 8 devices trains
(up to the order of float summation in the all-reduces), that each loads
only its half of every batch, that both write checkpoints into one workdir,
that killing one mid-run and restarting both resumes exactly, and that the
compiled data-parallel step gathers nothing. Every process is killed at the
end, also when the test fails.
"""

import contextlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import flax.nnx as nnx
import jax
import numpy as np
import pytest

from examples.paper import checkpoints
from examples.paper import models
from examples.paper import train

ROOT = pathlib.Path(__file__).parent.parent
WORKER = pathlib.Path(__file__).parent / 'multiprocess_worker.py'
TIMEOUT = 240
EPOCHS = 4  # 1 dense + 3 GSM
STEPS_PER_EPOCH = 4  # 64 examples, batches of 16

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8,
    reason='needs XLA_FLAGS=--xla_force_host_platform_device_count=8')


def free_port():
  with contextlib.closing(socket.socket()) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def processes(workdir, mode):
  """Starts both processes; kills whatever still runs on the way out."""
  port = free_port()
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu', PYTHONPATH=str(ROOT))
  procs = [subprocess.Popen(
      [sys.executable, str(WORKER), str(workdir), mode, str(port), str(i),
       str(workdir / f'process{i}.json')], env=env, cwd=ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
           for i in range(2)]
  try:
    yield procs
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, 9)
      p.wait()


def finish(procs):
  for p in procs:
    output, _ = p.communicate(timeout=TIMEOUT)
    assert p.returncode == 0, output.decode()[-4000:]


def run_two_processes(workdir, mode):
  workdir.mkdir()
  with processes(workdir, mode) as procs:
    finish(procs)
  return [json.loads((workdir / f'process{i}.json').read_text())
          for i in range(2)]


def final_state(workdir, config):
  model = models.create_model(config.model, config.num_classes, config.seed)
  optimizer = nnx.Optimizer(model, train.phases_lib.pruning_phase(
      config, 4, None).make_tx(), wrt=nnx.Param)
  saved = checkpoints.Checkpoints(str(workdir))
  assert saved.latest_step() == EPOCHS * STEPS_PER_EPOCH
  saved.restore(saved.latest_step(), model, optimizer)
  params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
  mask = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(optimizer)))
  return params, mask


def worker_config(mode):
  sys.path.insert(0, str(WORKER.parent))
  import multiprocess_worker  # pylint: disable=import-outside-toplevel
  return multiprocess_worker.tiny_config(mode)


def check_two_processes_train_what_one_process_trains(mode, tmp_path):
  """Runs both processes in ``mode`` into ``tmp_path / 'multi'``, checks
  them against one process with 8 devices, and returns the multi-process
  workdir."""
  config = worker_config(mode)
  reports = run_two_processes(tmp_path / 'multi', mode)
  for i, r in enumerate(reports):
    assert (r['process_index'], r['process_count']) == (i, 2)
    assert (r['device_count'], r['local_device_count']) == (8, 4)
  # Each process loaded its own half of every global batch of 16.
  assert len(reports[0]['train_shares']) == EPOCHS * STEPS_PER_EPOCH
  for a, b in zip(reports[0]['train_shares'], reports[1]['train_shares']):
    assert len(a) == len(b) == 8 and not set(a) & set(b)
  if mode == 'data':
    assert not reports[0]['all_gather'] and reports[0]['all_reduce']
  # Both wrote into one workdir: the last checkpoint and the report.
  assert (tmp_path / 'multi' / 'checkpoints' /
          str(EPOCHS * STEPS_PER_EPOCH)).is_dir()
  assert (tmp_path / 'multi' / 'report.json').exists()

  single = str(tmp_path / 'single')
  single_report = train.train_and_evaluate(config, single)
  multi_params, multi_opt = final_state(tmp_path / 'multi', config)
  single_params, single_opt = final_state(single, config)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4,
                                                       atol=2e-6),
               multi_params, single_params)
  # GSM's mask state: the same active count, the same threshold up to the
  # float summation order of the gradient all-reduce.
  mask_multi = gsm_state(multi_opt)
  mask_single = gsm_state(single_opt)
  assert int(mask_multi['num_active']) == int(mask_single['num_active'])
  np.testing.assert_allclose(mask_multi['threshold'],
                             mask_single['threshold'], rtol=1e-3)
  assert reports[0]['pruned_accuracy'] == single_report['pruned_accuracy']
  return tmp_path / 'multi'


def test_two_processes_train_what_one_process_trains_fsdp(tmp_path):
  check_two_processes_train_what_one_process_trains('fsdp', tmp_path)


def gsm_state(opt_state):
  found = {}

  def visit(tree):
    if isinstance(tree, dict):
      if {'threshold', 'num_active'} <= set(tree):
        found.update(threshold=tree['threshold'], num_active=tree['num_active'])
      for v in tree.values():
        visit(v)

  visit(opt_state)
  return found


def test_two_processes_train_what_one_does_and_resume_exactly_after_a_kill(
    tmp_path):
  # Data parallel: the two-process run equals one process's (above), and is
  # the reference the killed and restarted run must equal bit for bit.
  uninterrupted = check_two_processes_train_what_one_process_trains(
      'data', tmp_path)
  workdir = tmp_path / 'killed'
  workdir.mkdir()
  metrics = workdir / 'metrics.jsonl'
  with processes(workdir, 'data') as procs:
    deadline = time.time() + TIMEOUT
    # Epoch 3's line is written after epoch 2's checkpoint was saved.
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
      assert time.time() < deadline and all(p.poll() is None for p in procs)
      time.sleep(0.2)
    os.killpg(procs[1].pid, 9)  # process 1 dies; process 0 is then killed
  with processes(workdir, 'data') as procs:
    finish(procs)
  epochs = [json.loads(l)['epoch'] for l in metrics.read_text().splitlines()]
  assert epochs == list(range(1, EPOCHS + 1))
  config = worker_config('data')
  resumed, resumed_opt = final_state(workdir, config)
  straight, straight_opt = final_state(uninterrupted, config)
  jax.tree.map(np.testing.assert_array_equal, resumed, straight)
  jax.tree.map(np.testing.assert_array_equal, resumed_opt, straight_opt)
