"""Example training data-parallel and FSDP over 8 virtual CPU devices."""

import flax.nnx as nnx
import jax
import numpy as np
import pytest
from test_examples import tiny_config

from examples.paper import checkpoints
from examples.paper import models
from examples.paper import phases
from examples.paper import train

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8,
    reason='needs XLA_FLAGS=--xla_force_host_platform_device_count=8')


def final_params(config, workdir):
  report = train.train_and_evaluate(config, workdir)
  model = models.create_model(config.model, config.num_classes, config.seed)
  saved = checkpoints.Checkpoints(workdir)
  saved.restore(saved.latest_step(), model)
  return nnx.state(model, nnx.Param), report


def sharding_config():
  config = tiny_config('lenet300_fmnist')
  config.batch_size = 8
  config.synthetic_size = 32  # four steps per epoch
  config.ratio = 20.0
  config.eval_batch_size = 5  # not a multiple of 8: padded on the mesh
  return config


@pytest.fixture(scope='module')
def single_device_run(tmp_path_factory):
  """The run both sharded modes must equal, trained once (per worker)."""
  return final_params(sharding_config(),
                      str(tmp_path_factory.mktemp('single')))


@pytest.mark.parametrize('mode', ['data', 'fsdp'])
def test_sharded_training_matches_single_device(mode, tmp_path,
                                                single_device_run):
  config = sharding_config()
  single, single_report = single_device_run
  config.sharding = mode
  sharded, sharded_report = final_params(config, str(tmp_path / mode))
  for key in ('dense_accuracy', 'accuracy_before_prune', 'pruned_accuracy'):
    assert sharded_report[key] == single_report[key], key
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4,
                                                       atol=2e-6),
               single, sharded)


def compiled_epoch(mode):
  config = tiny_config('lenet300_fmnist')
  config.batch_size, config.sharding = 8, mode
  mesh = train.sharding.make_mesh(config)
  model = models.create_model(config.model, 10, 0)
  phase = phases.make_phases(config, 2, None)[1]  # the GSM phase
  optimizer = nnx.Optimizer(model, phase.make_tx(), wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  state, shardings = train.sharding.place(state, mesh, mode)
  step = train.make_train_step(graphdef, config, mesh, shardings)
  images = np.zeros((16, 28, 28, 1), np.uint8)
  labels = np.zeros((16,), np.int32)
  hlo = step.lower(state, images[:8], labels[:8], jax.random.key(0)).compile()
  return state, hlo.as_text()


def test_fsdp_splits_parameters_and_optimizer_state():
  state, _ = compiled_epoch('fsdp')
  fc1 = [x for x in jax.tree.leaves(state) if x.shape == (784, 300)]
  # The kernel, its momentum and GSM's last mask (the config tracks churn).
  assert sorted(str(x.dtype) for x in fc1) == ['bool', 'float32', 'float32']
  assert all(x.sharding.shard_shape(x.shape) == (98, 300) for x in fc1)
  bias = [x for x in jax.tree.leaves(state) if x.shape == (10,)]
  assert all(x.sharding.is_fully_replicated for x in bias)  # 10 % 8 != 0


def test_data_parallel_gsm_step_gathers_nothing():
  _, hlo = compiled_epoch('data')
  assert 'all-gather' not in hlo
  assert 'all-reduce' in hlo  # gradients and GSM's per-pass counts
