"""The Flax examples: models, configs, input pipeline, resume, report.

Long because it tests the whole paper harness end to end (every config,
the data, resume, the report and the deployed files, the baselines); the
sharded and multi-process runs have files of their own.
"""

import gzip
import importlib
import json
import os
import pathlib
import struct
import subprocess
import sys

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import model_zoo
import numpy as np
import pytest
import tensorflow_datasets as tfds

from examples.paper import checkpoints
from examples.paper import data
from examples.paper import input_pipeline
from examples.paper import models
from examples.paper import phases
from examples.paper import train
import gsm_optax

ROOT = pathlib.Path(__file__).parent.parent
CONFIGS = ['lenet300_fmnist', 'lenet5_fmnist', 'lenet300_paper',
           'lenet5_paper', 'resnet56_cifar10', 'densenet40_cifar10',
           'resnet50_imagenet']

# (model, input shape, parameter count, kernel count) from the paper.
MODEL_SIZES = [('lenet300', (2, 28, 28, 1), 10, 266_610, 266_200),
               ('lenet5', (2, 28, 28, 1), 10, 431_080, 430_500),
               ('resnet56', (2, 32, 32, 3), 10, 855_770, 851_504),
               ('densenet40', (2, 32, 32, 3), 10, 1_019_722, 1_001_616),
               ('resnet50', (1, 64, 64, 3), 1000, 25_557_032, 25_502_912)]


# The conv nets' initializers compile for minutes on a 2-core CPU (one
# program per layer shape): where a test is about shapes or a training loop,
# not about the initializers, their weights are random (tests/model_zoo.py).
CONV_NETS = ('resnet56', 'densenet40', 'resnet50')


def create_model(name, classes, seed=0):
  make = (model_zoo.fast_create_model if name in CONV_NETS else
          models.create_model)
  return make(name, classes, seed)


@pytest.mark.parametrize('name,shape,classes,n_params,n_kernels', MODEL_SIZES)
def test_model_output_shape_and_parameter_count(name, shape, classes,
                                                n_params, n_kernels):
  model = create_model(name, classes, seed=0)
  model.eval()
  assert nnx.jit(lambda m, x: m(x))(model, jnp.zeros(shape)).shape == (
      shape[0], classes)
  params = jax.tree.leaves(nnx.state(model, nnx.Param))
  assert sum(p.size for p in params) == n_params
  assert sum(p.size for p in params if p.ndim >= 2) == n_kernels


def tiny_config(name, tmp_path=None):
  config = importlib.import_module(f'examples.paper.configs.{name}').get_config()
  if config.dataset in ('mnist', 'fashion_mnist'):
    config.dataset = 'synthetic'  # TFDS datasets use tfds.testing.mock_data
  config.batch_size = 4
  config.synthetic_size = 8  # two train steps per epoch
  config.eval_batch_size = 4
  config.dense.epochs = 1
  config.gsm.epochs = 1
  config.dense.warmup_epochs = config.gsm.warmup_epochs = 0
  if config.image_shape[0] > 32:
    config.image_shape = (32, 32, 3)  # ResNet-50 is fully convolutional
  if 'grain_workers' in config:
    config.grain_workers = 0  # decode in the test's own process
  config.ratio = 5.0
  return config


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_trains(name, tmp_path, monkeypatch, fast_compile):
  config = tiny_config(name)
  if config.model in CONV_NETS:  # the loop is tested, not the model's size
    monkeypatch.setattr(models, 'create_model', model_zoo.small_create_model)
  with tfds.testing.mock_data(num_examples=8):
    report = train.train_and_evaluate(config, str(tmp_path))
  assert report['kept_weights'] >= report['prunable_weights'] // 5
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  records = [json.loads(l) for l in lines]
  assert [r['phase'] for r in records] == ['dense', 'gsm']
  # Ties at the threshold are kept, so at least Q are active; exactly the
  # scores at or above the threshold is checked in test_gsm.py.
  assert records[1]['num_active'] >= report['prunable_weights'] // 5
  assert np.isfinite(records[1]['loss'])


def load_config(name):
  return importlib.import_module(f'examples.paper.configs.{name}').get_config()


def config_fields(config, prefix=''):
  for key in config.keys():
    value = config[key]
    if hasattr(value, 'keys'):
      yield from config_fields(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', config, key


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_field_can_be_set_from_the_command_line(name):
  config = load_config(name)
  for field, parent, key in config_fields(config):
    # A field whose value is None and whose type is not declared cannot be
    # set (ml_collections: "Could not override"); declare it with
    # ml_collections.FieldReference(None, field_type=...).
    assert parent.get_type(key) is not type(None), field


def test_paper_config_overrides_reach_the_run(tmp_path):
  # The command line that was refused (score_decay was a plain None).
  workdir = tmp_path / 'run'
  subprocess.run(
      [sys.executable, '-m', 'examples.paper.main', '--config',
       'examples/paper/configs/lenet300_paper.py', f'--workdir={workdir}',
       '--config.gsm.score_decay=0.99', '--config.dataset=synthetic',
       '--config.synthetic_size=8', '--config.batch_size=4',
       '--config.eval_batch_size=4', '--config.dense.epochs=1',
       '--config.gsm.epochs=1', '--config.ratio=5'],
      check=True, cwd=ROOT, capture_output=True)
  report = json.loads((workdir / 'report.json').read_text())
  assert report['ratio'] == 5.0 and report['kept_weights'] > 0
  config = load_config('lenet300_paper')
  config.dataset = 'mnist'  # normalized as MNIST, not as Fashion-MNIST
  assert input_pipeline.normalization(config) == (0.1307, 0.3081)
  assert input_pipeline.normalization(load_config('lenet300_paper')) == (
      0.2860, 0.3530)
  config.gsm.score_decay = 0.99
  assert phases.gsm_options(config.gsm)['score_decay'] == 0.99


def test_passive_decay_starts_at_its_epoch():
  config = load_config('lenet300_fmnist')
  config.gsm.passive_decay = 3e-3
  assert phases.gsm_options(config.gsm, 10)['passive_decay'] == 3e-3
  config.gsm.passive_decay_epoch = 2  # from step 20 of the phase on
  rho = phases.gsm_options(config.gsm, 10)['passive_decay']
  assert [float(rho(jnp.int32(c))) for c in (0, 19, 20, 500)] == [
      0.0, 0.0, np.float32(3e-3), np.float32(3e-3)]


@pytest.mark.parametrize('name', ['lenet300_paper', 'lenet5_paper'])
def test_paper_configs_follow_the_official_scripts(name):
  # ../shared/PAPER.md, "Settings in the official scripts": LeNet base 200
  # epochs, lr 3e-2 x0.1 at 40/80/120/160; GSM 280 epochs, lr 1e-2 x0.1 at
  # 160/200/240; beta 0.9 / 0.99 Nesterov; decay 5e-4; batch 256; 5-epoch
  # linear warm-ups; Xavier-uniform kernels.
  config = load_config(name)
  steps = 234  # 60,000 // 256
  assert config.batch_size == 256
  for phase, epochs, lr, drops, beta, nesterov in (
      (config.dense, 200, 3e-2, (40, 80, 120, 160), 0.9, False),
      (config.gsm, 280, 1e-2, (160, 200, 240), 0.99, True)):
    assert (phase.epochs, phase.momentum, phase.nesterov,
            phase.weight_decay) == (epochs, beta, nesterov, 5e-4)
    schedule = phases.learning_rate_schedule(phase, steps)
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(schedule(5 * steps // 2), lr / 2, rtol=1e-2)
    np.testing.assert_allclose(schedule(5 * steps), lr, rtol=1e-6)
    for i, epoch in enumerate(drops):  # absolute epochs, as the scripts
      np.testing.assert_allclose(schedule(epoch * steps - 1), lr * 0.1**i,
                                 rtol=1e-5)
      np.testing.assert_allclose(schedule(epoch * steps), lr * 0.1**(i + 1),
                                 rtol=1e-5)
  model = models.from_config(config)
  for path, x in jax.tree_util.tree_flatten_with_path(
      nnx.to_pure_dict(nnx.state(model, nnx.Param)))[0]:
    if x.ndim >= 2:  # Xavier-uniform: |w| < sqrt(6 / (fan_in + fan_out))
      fan_in, fan_out = np.prod(x.shape[:-1]), x.shape[-1]
      if x.ndim == 4:
        fan_in, fan_out = (np.prod(x.shape[:-1]),
                           x.shape[-1] * np.prod(x.shape[:2]))
      limit = np.sqrt(6 / (fan_in + fan_out))
      assert 0.95 * limit < np.abs(x).max() <= limit, path


def count_top_magnitudes(arrays, q):
  """How many weights reach the q-th largest |w|: what a prune keeps."""
  mags = np.concatenate([np.abs(np.asarray(a)).ravel() for a in arrays])
  return int(np.sum(mags >= np.sort(mags)[-q]))


def kernels_of(model):
  return [x for x in jax.tree.leaves(nnx.state(model, nnx.Param))
          if x.ndim >= 2]


def write_idx(path, array):
  header = struct.pack('>HBB', 0, 0x08, array.ndim) + struct.pack(
      f'>{array.ndim}I', *array.shape)
  opener = gzip.open if str(path).endswith('.gz') else open
  with opener(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_idx_reader_round_trip_and_truncation(tmp_path):
  images = np.random.default_rng(0).integers(0, 256, (5, 28, 28))
  labels = np.arange(5)
  write_idx(tmp_path / 'train-images-idx3-ubyte.gz', images)
  write_idx(tmp_path / 'train-labels-idx1-ubyte', labels)
  x, y = input_pipeline.load_idx(str(tmp_path), 'train')
  np.testing.assert_array_equal(x[..., 0], images)
  np.testing.assert_array_equal(y, labels)
  assert x.shape == (5, 28, 28, 1)

  raw = (tmp_path / 'train-labels-idx1-ubyte').read_bytes()
  (tmp_path / 'train-labels-idx1-ubyte').write_bytes(raw[:-2])
  with pytest.raises(ValueError, match='truncated or corrupt'):
    input_pipeline.load_idx(str(tmp_path), 'train')


def test_missing_data_error_names_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match='dataset-fashion-mnist'):
    input_pipeline.load_idx(str(tmp_path), 'test')


def test_no_idx_files_and_no_tfds_data_error_names_the_fix(monkeypatch):
  # A fresh machine without Debian's package: TFDS is the fallback, and
  # offline it fails deep inside (no download); the error names the fix.
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  def offline(name, split):
    raise ModuleNotFoundError(f'cannot prepare {name}/{split} here')

  monkeypatch.setattr(tfds, 'data_source', offline)
  monkeypatch.setattr(input_pipeline, 'IDX_DIRS',
                      {'fashion_mnist': ('/nonexistent',)})
  config = tiny_config('lenet300_fmnist')
  config.dataset = 'fashion_mnist'
  with pytest.raises(RuntimeError, match=r"'fashion_mnist'.*apt-get install "
                     r'dataset-fashion-mnist.*config.data_dir'):
    input_pipeline.load_split(config, 'train')


def test_holdout_evaluates_on_the_training_tail_never_on_test():
  config = tiny_config('lenet300_fmnist')
  config.synthetic_size = 48
  config.holdout_fraction = 0.25
  images, labels = input_pipeline.load_split(config, 'train')
  test_images, _ = input_pipeline.load_split(config, 'test')
  held = data.InMemoryData(config)
  assert held.images.shape[0] == 36 and held.steps_per_epoch == 9
  np.testing.assert_array_equal(held.images, images[:36])
  np.testing.assert_array_equal(held.test_images, images[36:])
  np.testing.assert_array_equal(held.test_labels, labels[36:])
  assert held.test_images.shape != test_images.shape or not np.array_equal(
      held.test_images, test_images)
  config.holdout_fraction = 1.0
  with pytest.raises(ValueError, match='holdout_fraction'):
    data.InMemoryData(config)


def final_params(workdir):
  with open(os.path.join(workdir, 'report.json')) as f:
    report = json.load(f)
  model = models.create_model('lenet300', 10, 0)
  saved = checkpoints.Checkpoints(workdir)
  saved.restore(saved.latest_step(), model)
  return report, nnx.state(model, nnx.Param)


def test_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
  config = tiny_config('lenet300_fmnist')
  config.dense.epochs = config.gsm.epochs = 2
  full = str(tmp_path / 'full')
  train.train_and_evaluate(config, full)

  resumed = str(tmp_path / 'resumed')
  original = checkpoints.append_jsonl
  calls = []
  def crash_after_three_epochs(path, record):
    original(path, record)
    calls.append(record)
    if len(calls) == 3:  # in the middle of the GSM phase
      raise KeyboardInterrupt
  monkeypatch.setattr(checkpoints, 'append_jsonl', crash_after_three_epochs)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, resumed)
  monkeypatch.setattr(checkpoints, 'append_jsonl', original)
  train.train_and_evaluate(config, resumed)

  (report_a, params_a), (report_b, params_b) = final_params(full), final_params(
      resumed)
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
  assert report_a['pruned_accuracy'] == report_b['pruned_accuracy']
  epochs = [json.loads(l)['epoch'] for l in open(
      os.path.join(resumed, 'metrics.jsonl'))]
  assert epochs == [1, 2, 3, 4]


def test_report_totals_on_a_tiny_run(tmp_path):
  config = tiny_config('lenet300_fmnist')
  config.ratio = 60.0
  report = train.train_and_evaluate(config, str(tmp_path))
  before = checkpoints.Snapshots(str(tmp_path)).load('gsm', config)
  kept = count_top_magnitudes(kernels_of(before), 266_200 // 60)  # ties kept
  assert kept >= 266_200 // 60
  assert report['prunable_weights'] == 266_200
  assert report['kept_weights'] == kept
  assert report['compression'] == pytest.approx(266_200 / kept)
  assert report['sparsity']['total_size'] == 266_610
  leaves = report['sparsity']['leaves']
  biases = sum(l['nonzero'] for l in leaves if not l['prunable'])
  assert biases <= 410  # biases are never pruned (a dead unit's may stay 0)
  assert report['sparsity']['total_nonzero'] == kept + biases
  assert sum(l['nonzero'] for l in leaves if l['prunable']) == kept
  # The pruned model is saved twice: an orbax snapshot and the sparse file,
  # which loads back bit for bit.
  deploy = report['deploy']
  path = tmp_path / deploy['sparse_file']
  assert deploy['sparse_file_bytes'] == path.stat().st_size
  assert deploy['sparse_file_bytes'] * 25 < deploy['dense_array_bytes']
  pruned = checkpoints.Snapshots(str(tmp_path)).load('pruned', config)
  loaded = gsm_optax.load_sparse(str(path))
  snapshot = nnx.to_pure_dict(nnx.state(pruned))
  for a, b in zip(jax.tree.leaves(snapshot), jax.tree.leaves(loaded)):
    assert np.asarray(a).tobytes() == b.tobytes()
  assert deploy['inference']['speedup'] > 0
  assert (tmp_path / 'layer_density.png').stat().st_size > 1000


def test_lottery_tickets_stay_inside_their_masks(tmp_path):
  import gsm_optax  # pylint: disable=import-outside-toplevel
  config = tiny_config('lenet300_fmnist')
  config.lottery = True
  report = train.train_and_evaluate(config, str(tmp_path))
  assert report['ticket_accuracy'] is not None
  assert report['ticket_magnitude_accuracy'] is not None
  snapshots = checkpoints.Snapshots(str(tmp_path))
  init = nnx.state(models.create_model('lenet300', 10, config.seed), nnx.Param)
  for ticket, source in (('ticket_gsm', 'gsm'), ('ticket_magnitude', 'dense')):
    source_model = snapshots.load(source, config)
    _, masks = gsm_optax.prune(nnx.state(source_model, nnx.Param),
                               config.ratio)
    trained = nnx.state(snapshots.load(ticket, config), nnx.Param)
    kept = 0
    for p, m, p0 in zip(jax.tree.leaves(trained), jax.tree.leaves(masks),
                        jax.tree.leaves(init)):
      p, m, p0 = np.asarray(p), np.asarray(m), np.asarray(p0)
      assert np.all(p[~m] == 0)
      if p.ndim >= 2:
        kept += m.sum()
        assert np.any(p[m] != p0[m])  # retrained from the initial weights
    assert kept == count_top_magnitudes(kernels_of(source_model), 266_200 // 5)


@pytest.mark.parametrize('pruning', ['magnitude_ft', 'gradual_magnitude'])
def test_baselines_start_from_a_shared_dense_model(pruning, tmp_path):
  config = tiny_config('lenet300_fmnist')
  config.gsm.epochs = 2
  dense = train.train_and_evaluate(config, str(tmp_path / 'gsm'))
  config.pruning = pruning
  config.dense_from = str(tmp_path / 'gsm')
  report = train.train_and_evaluate(config, str(tmp_path / pruning))
  assert report['dense_accuracy'] == dense['dense_accuracy']
  assert report['pruning'] == pruning
  # The baseline's own training already left Q non-zero kernels (more only
  # by ties at its last threshold); magnitude + FT's fixed mask is the prune
  # of the shared dense model.
  model = checkpoints.Snapshots(str(tmp_path / pruning)).load(pruning, config)
  nonzero = sum(int(np.count_nonzero(k)) for k in kernels_of(model))
  assert nonzero >= 266_200 // 5
  if pruning == 'magnitude_ft':
    dense_model = checkpoints.Snapshots(str(tmp_path / 'gsm')).load('dense', config)
    assert nonzero == count_top_magnitudes(kernels_of(dense_model),
                                           266_200 // 5)
  records = [json.loads(l) for l in open(tmp_path / pruning / 'metrics.jsonl')]
  assert [r['phase'] for r in records] == [pruning] * 2  # no dense epochs


def test_gsm_ratio_warmup_reaches_the_final_ratio(tmp_path):
  config = tiny_config('lenet300_fmnist')
  config.gsm.epochs = 3
  config.gsm.ratio_warmup_epochs = 2  # 2 steps per epoch: 4 warm-up steps
  train.train_and_evaluate(config, str(tmp_path))
  records = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  active = [r['num_active'] for r in records if r['phase'] == 'gsm']
  assert active[0] > active[-1] >= 266_200 // 5  # dense-ish, then Q (+ ties)
  assert active[-1] < 266_200 // 4


def test_a_diverged_run_is_reported_as_such_not_pruned(tmp_path):
  config = tiny_config('lenet300_fmnist')
  config.gsm.epochs = 2
  config.gsm.learning_rate = 1e30  # blows the weights up to inf, then NaN
  report = train.train_and_evaluate(config, str(tmp_path))
  records = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert not np.isfinite(records[-1]['loss'])
  assert report['diverged'] is True
  # Not pruned: a NaN magnitude has no rank, so every weight is reported.
  assert report['kept_weights'] == report['prunable_weights'] == 266_200
  ok = train.train_and_evaluate(tiny_config('lenet300_fmnist'),
                                str(tmp_path / 'ok'))
  assert ok['diverged'] is False


def test_ratio_warmup_uses_the_configured_selection_route():
  config = tiny_config('lenet300_fmnist')
  config.gsm.ratio_warmup_epochs = 2
  config.method = 'top_k'  # needs a static ratio, so it must refuse here
  tx = phases.gsm_with_ratio_warmup(config, steps_per_epoch=2)
  params = {'w': jnp.ones((4, 4))}
  with pytest.raises(ValueError, match="method='top_k' needs a static"):
    jax.jit(tx.update)(params, tx.init(params), params)
  config.method = 'interpolate'
  tx = phases.gsm_with_ratio_warmup(config, steps_per_epoch=2)
  updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
  assert updates['w'].shape == (4, 4)


def test_structured_gsm_run_slims_and_exports(tmp_path):
  config = tiny_config('lenet5_fmnist')
  config.structure, config.budget, config.ratio = 'channels', 'flops', 2.0
  report = train.train_and_evaluate(config, str(tmp_path))
  slim = report['slim']
  before, after = slim['flops']
  assert before / after >= 2.0 * (1 - 1e-6) and after > 0  # within budget
  kept = {name: (size, n) for name, size, n in slim['channels']}
  assert set(kept) == {"['conv1']", "['conv2']", "['fc1']"}
  assert all(1 <= n <= size for size, n in kept.values())
  assert (tmp_path / slim['artefact']).stat().st_size == slim['artefact_bytes']
  records = [json.loads(l) for l in
             (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert 3 <= records[1]['num_active'] <= 570  # groups, one per layer at least


@pytest.mark.parametrize('pruning,score', [('magnitude_ft', 'magnitude'),
                                           ('gradual_magnitude',
                                            'group_taylor')])
def test_structured_baselines_remove_whole_neurons_within_budget(
    pruning, score, tmp_path):
  config = tiny_config('lenet300_fmnist')
  config.structure, config.budget, config.ratio = 'channels', 'flops', 3.0
  config.gsm.epochs = 2
  train.train_and_evaluate(config, str(tmp_path / 'gsm'))
  config.pruning, config.gradual.score = pruning, score
  config.gradual.update_every = 1
  config.dense_from = str(tmp_path / 'gsm')
  report = train.train_and_evaluate(config, str(tmp_path / pruning))
  # It trained at its final mask of whole neurons: the prune changes nothing.
  assert report['accuracy_before_prune'] == report['pruned_accuracy']
  before, after = report['slim']['flops']
  assert before / after >= 3.0 * (1 - 1e-6)
  model = checkpoints.Snapshots(str(tmp_path / pruning)).load(pruning, config)
  kernel = np.asarray(model.fc1.kernel[...])
  dead = ~kernel.any(axis=0)  # a removed neuron: its column, bias, next row
  assert dead.any() and not np.asarray(model.fc1.bias[...])[dead].any()
  assert not np.asarray(model.fc2.kernel[...])[dead].any()
  if pruning == 'magnitude_ft':  # the group prune of the shared dense model
    dense = checkpoints.Snapshots(str(tmp_path / 'gsm')).load('dense', config)
    _, masks = gsm_optax.prune(nnx.state(dense, nnx.Param), 3.0,
                               **phases.prune_structure(config))
    np.testing.assert_array_equal(~dead, np.asarray(masks['fc1']['bias']))
