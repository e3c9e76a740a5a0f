"""Checkpoints inside an epoch: a resumed run continues with the next batch.

In-memory data resume from the step; streamed data (Grain) from the
iterator state saved in the orbax checkpoint.
"""

import json
import os

import flax.nnx as nnx
import jax
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds
from test_examples import tiny_config

from examples.paper import checkpoints
from examples.paper import data as data_lib
from examples.paper import models
from examples.paper import train


def run_crashing_after(config, workdir, monkeypatch, crash_at_step):
  """Runs until the checkpoint of ``crash_at_step`` is saved, then dies."""
  original = checkpoints.Checkpoints.save

  def save_then_crash(self, step, *args, **kwargs):
    original(self, step, *args, **kwargs)
    if step == crash_at_step:
      raise KeyboardInterrupt

  monkeypatch.setattr(checkpoints.Checkpoints, 'save', save_then_crash)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, workdir)
  monkeypatch.setattr(checkpoints.Checkpoints, 'save', original)


def final(config, workdir):
  saved = checkpoints.Checkpoints(workdir)
  model = models.create_model(config.model, config.num_classes, config.seed)
  saved.restore(saved.latest_step(), model)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(l) for l in f]
  for r in records:
    del r['seconds']
  return nnx.state(model, nnx.Param), records, saved.latest_step()


def test_in_memory_run_resumes_inside_an_epoch_exactly(tmp_path, monkeypatch):
  config = tiny_config('lenet300_fmnist')
  config.synthetic_size = 16  # 4 steps an epoch
  config.gsm.epochs = 2
  config.checkpoint_every_steps = 3
  straight = str(tmp_path / 'straight')
  resumed = str(tmp_path / 'resumed')
  train.train_and_evaluate(config, straight)
  # Epoch 2 (the first GSM epoch) is cut after its step 3 of 4: step 7.
  run_crashing_after(config, resumed, monkeypatch, crash_at_step=7)
  assert checkpoints.Checkpoints(resumed).latest_step() == 7
  train.train_and_evaluate(config, resumed)
  params_a, records_a, last_a = final(config, straight)
  params_b, records_b, last_b = final(config, resumed)
  assert last_a == last_b == 12
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
  # The epoch's loss and accuracy include the steps before the crash.
  assert records_a == records_b and [r['epoch'] for r in records_b] == [1, 2, 3]


def streamed_config(workers=0):
  config = tiny_config('resnet50_imagenet')
  config.image_shape = (16, 16, 3)
  config.batch_size = 2
  config.grain_workers = workers
  return config


def test_grain_iterator_state_round_trips_through_the_orbax_checkpoint(
    tmp_path):
  config = streamed_config()
  key = jax.random.key(3)
  model = models.create_model('lenet300', 10, 0)
  optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
  with tfds.testing.mock_data(num_examples=10):
    data = data_lib.load_data(config)
    assert data.steps_per_epoch == 5
    straight = [(np.array(x), np.array(y)) for x, y in data.train_batches(key)]
    batches = data.train_batches(key)
    it = iter(batches)
    head = [next(it) for _ in range(2)]
    saved = checkpoints.Checkpoints(str(tmp_path))
    saved.save(2, model, optimizer, data.checkpoint_args(batches),
               {'loss': [1.0, 2.0]})
    assert (tmp_path / 'checkpoints' / '2' / 'data').is_dir()

    again = data_lib.load_data(config).train_batches(key, start=2)
    with pytest.raises(RuntimeError, match='Grain iterator state'):
      next(iter(again))
    progress = saved.restore(2, data=data.checkpoint_args(again,
                                                          restore=True),
                             progress=True)
    rest = [(np.array(x), np.array(y)) for x, y in again]
  assert progress == {'loss': [1.0, 2.0]}
  assert len(rest) == 3
  for (x, y), (u, v) in zip(straight, [*head, *rest]):
    np.testing.assert_array_equal(x, u)
    np.testing.assert_array_equal(y, v)
  # Not a restart from the epoch's beginning: the first resumed batch is
  # the third one.
  assert not np.array_equal(rest[0][0], straight[0][0])


class TinyConvNet(nnx.Module):
  """A conv net that compiles in seconds (the wiring is under test)."""

  def __init__(self, num_classes, seed):
    rngs = nnx.Rngs(seed)
    self.conv = nnx.Conv(3, 8, (3, 3), strides=2, rngs=rngs)
    self.head = nnx.Linear(8, num_classes, rngs=rngs)

  def __call__(self, x):
    return self.head(jax.nn.relu(self.conv(x)).mean(axis=(1, 2)))


def test_streamed_run_resumes_inside_an_epoch_exactly(tmp_path, monkeypatch):
  monkeypatch.setattr(models, 'create_model',
                      lambda name, classes, seed, *_: TinyConvNet(classes, seed))
  config = streamed_config()
  config.checkpoint_every_steps = 2
  with tfds.testing.mock_data(num_examples=6):  # 3 steps an epoch
    straight = str(tmp_path / 'straight')
    resumed = str(tmp_path / 'resumed')
    train.train_and_evaluate(config, straight)
    run_crashing_after(config, resumed, monkeypatch, crash_at_step=5)
    train.train_and_evaluate(config, resumed)
    params_a, records_a, _ = final(config, straight)
    params_b, records_b, _ = final(config, resumed)
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
  assert records_a == records_b
