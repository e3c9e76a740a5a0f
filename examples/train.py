"""The shared training library: dense phase, GSM phase, final prune, report.

Every experiment runs the same `train_and_evaluate(config, workdir)`:
train (or resume) a dense model, train it with GSM at ``config.ratio``, prune
the Q largest |w| globally, evaluate with no fine-tuning, and write the
report. Each epoch feeds its batches to one jitted train step; orbax saves
the model and optimizer after every epoch, so a killed run resumes exactly.
"""

import dataclasses
import functools
from functools import partial
import json
import os
import time
from typing import Callable, Optional

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm

import gsm_optax
from examples import input_pipeline
from examples import models
from examples import sharding


@dataclasses.dataclass(frozen=True)
class Phase:
  """One stage of training.

  ``make_tx`` builds the optimizer when the phase runs (a ticket's mask comes
  from earlier phases); ``start_from``, if given, resets the model when the
  phase starts (a ticket rewinds to the initial weights).
  """
  name: str
  epochs: int
  make_tx: Callable[[], optax.GradientTransformation]
  start_from: Optional[Callable[[nnx.Module], None]] = None


def learning_rate_schedule(phase_config, steps_per_epoch):
  """Linear warm-up, then x0.1 at each of ``decay_epochs`` (as the paper),
  counted from the end of the warm-up (`optax.join_schedules` restarts the
  step count there)."""
  warmup = phase_config.warmup_epochs * steps_per_epoch
  boundaries = {int(e * steps_per_epoch): 0.1 for e in phase_config.decay_epochs}
  return optax.join_schedules(
      [optax.linear_schedule(0.0, phase_config.learning_rate, max(warmup, 1)),
       optax.piecewise_constant_schedule(phase_config.learning_rate,
                                         boundaries)], [max(warmup, 1)])


def sgd_with_decay(phase_config, steps_per_epoch):
  """Momentum SGD with weight decay on the kernels (the paper's base run)."""
  return optax.chain(
      optax.add_decayed_weights(phase_config.weight_decay,
                                mask=gsm_optax.default_prunable),
      optax.sgd(learning_rate_schedule(phase_config, steps_per_epoch),
                phase_config.momentum, phase_config.nesterov))


def pruning_phase(config, steps_per_epoch, snapshots):
  """The phase that prunes: GSM, or a baseline with the same budget.

  Every method gets the same epochs and learning-rate schedule
  (``config.gsm``) and starts from the same dense model.
  """
  g = config.gsm
  if config.pruning == 'gsm':
    return Phase('gsm', g.epochs, lambda: gsm_with_ratio_warmup(
        config, steps_per_epoch))
  if config.pruning == 'magnitude_ft':  # Han et al. 2015: prune, fine-tune
    mask = snapshot_mask(snapshots, 'dense', config)
    return Phase('magnitude_ft', g.epochs, lambda: optax.chain(
        gsm_optax.fixed_mask(mask()), sgd_with_decay(g, steps_per_epoch)),
                 start_from=lambda model: apply_mask(model, mask()))
  if config.pruning == 'gradual_magnitude':  # Zhu & Gupta 2017
    total = g.epochs * steps_per_epoch
    return Phase('gradual_magnitude', g.epochs, lambda: optax.chain(
        sgd_with_decay(g, steps_per_epoch),
        gsm_optax.gradual_magnitude_pruning(
            config.ratio, begin_step=0,
            end_step=int(config.gradual.end_fraction * total),
            update_every=config.gradual.update_every,
            global_ranking=config.gradual.global_ranking)))
  raise ValueError("config.pruning must be 'gsm', 'magnitude_ft' or "
                   f"'gradual_magnitude'; got {config.pruning!r}.")


def gsm_with_ratio_warmup(config, steps_per_epoch):
  """GSM; with ``gsm.ratio_warmup_epochs``, the kept fraction goes from 1
  to 1/C on Zhu & Gupta's cubic schedule (through inject_hyperparams)."""
  g = config.gsm
  lr = learning_rate_schedule(g, steps_per_epoch)
  if not g.ratio_warmup_epochs:
    return gsm_optax.gsm(lr, config.ratio, momentum=g.momentum,
                         weight_decay=g.weight_decay, nesterov=g.nesterov,
                         method=config.method)
  warmup = g.ratio_warmup_epochs * steps_per_epoch
  # 1 / (kept fraction) in float32 can end just above C: end on C itself.
  ratio = lambda step: jnp.where(
      step >= warmup, config.ratio,
      1.0 / gsm_optax.cubic_keep_fraction(step, config.ratio, 0, warmup))
  return optax.inject_hyperparams(
      gsm_optax.gsm, static_args=('nesterov', 'method'))(
          learning_rate=lr, ratio=ratio, momentum=g.momentum,
          weight_decay=g.weight_decay, nesterov=g.nesterov,
          method=config.method)


def make_phases(config, steps_per_epoch, snapshots):
  """dense -> pruning, then (lottery mode) the pruned and magnitude tickets."""
  d = config.dense
  phases = [
      Phase('dense', 0 if config.dense_from else d.epochs,
            lambda: sgd_with_decay(d, steps_per_epoch)),
      pruning_phase(config, steps_per_epoch, snapshots),
  ]
  if not config.lottery:
    return phases
  # Table 4: mask by global magnitude of the trained dense weights, or of the
  # GSM-trained weights; apply it to the initial weights; retrain with the
  # base schedule and the loss gradient masked.
  for name, source in (('ticket_' + config.pruning, config.pruning),
                       ('ticket_magnitude', 'dense')):
    ticket_mask = snapshot_mask(snapshots, source, config)
    phases.append(Phase(
        name, d.epochs,
        make_tx=lambda m=ticket_mask: optax.chain(
            gsm_optax.fixed_mask(m()), sgd_with_decay(d, steps_per_epoch)),
        start_from=lambda model, m=ticket_mask: rewind(model, m(), config)))
  return phases


def snapshot_mask(snapshots, name, config):
  """A cached loader of the global magnitude mask (at ``config.ratio``) of
  the model saved at the end of phase ``name``; loaded when first needed."""
  @functools.cache
  def mask():
    params = nnx.state(snapshots.load(name, config), nnx.Param)
    return gsm_optax.prune(params, config.ratio, method=config.method)[1]
  return mask


def apply_mask(model, masks):
  """Zeroes the parameters of ``model`` where ``masks`` is False."""
  params = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map(
      lambda p, m: jnp.where(m, p, jnp.zeros((), p.dtype)), params, masks))


def rewind(model, masks, config):
  """Resets ``model`` to its initial weights with ``masks`` applied."""
  nnx.update(model, nnx.state(
      models.create_model(config.model, config.num_classes, config.seed)))
  apply_mask(model, masks)


def preprocess(images, config, key=None):
  """uint8 NHWC -> normalised float; random pad-4 crop + flip if augmenting."""
  x = images.astype(jnp.float32) / 255.0
  mean, std = config.normalize
  x = (x - jnp.asarray(mean)) / jnp.asarray(std)
  if key is None or not config.augment:
    return x
  n, h, w, _ = x.shape
  k_crop, k_flip = jax.random.split(key)
  padded = jnp.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
  offsets = jax.random.randint(k_crop, (n, 2), 0, 9)
  crop = jax.vmap(lambda im, o: jax.lax.dynamic_slice(
      im, (o[0], o[1], 0), (h, w, im.shape[-1])))
  x = crop(padded, offsets)
  flip = jax.random.bernoulli(k_flip, 0.5, (n, 1, 1, 1))
  return jnp.where(flip, x[:, :, ::-1], x)


def loss_fn(model, images, labels):
  logits = model(images)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return loss, logits


def make_train_step(graphdef, config, mesh=None, shardings=None):
  """The jitted train step on one batch of uint8 images and labels.

  With a mesh, each batch is split along its first axis and the state keeps
  ``shardings`` (replicated or FSDP, see `examples.sharding`).
  """

  def constrain(tree, target):
    if target is None:
      return tree
    return jax.lax.with_sharding_constraint(tree, target)

  @partial(jax.jit, donate_argnums=0)
  def train_step(state, images, labels, key):
    state = constrain(state, shardings)
    model, optimizer = nnx.merge(graphdef, state)
    if mesh is not None:
      images, labels = constrain((images, labels),
                                 sharding.batch_sharding(mesh))
    x = preprocess(images, config, key)
    (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(
        model, x, labels)
    optimizer.update(model, grads)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return constrain(nnx.state((model, optimizer)), shardings), (loss,
                                                                  accuracy)

  return train_step


class InMemoryData:
  """A small dataset kept on the device; batches are gathered there."""

  def __init__(self, config):
    images, labels = input_pipeline.load_split(config, 'train')
    holdout = int(round(config.get('holdout_fraction', 0.0) * len(images)))
    if holdout:  # evaluate on the last training examples, never on test
      if not 0 < holdout < len(images):
        raise ValueError(f'config.holdout_fraction='
                         f'{config.holdout_fraction} must be in (0, 1).')
      self.test_images, self.test_labels = images[-holdout:], labels[-holdout:]
      images, labels = images[:-holdout], labels[:-holdout]
    else:
      self.test_images, self.test_labels = input_pipeline.load_split(
          config, 'test')
    self.images, self.labels = jnp.asarray(images), jnp.asarray(labels)
    self.batch_size = config.batch_size
    self.steps_per_epoch = len(images) // config.batch_size

  def train_batches(self, key):
    """This process's share of the epoch's batches, in an order from ``key``."""
    order = _shuffled_batches(key, self.images.shape[0], self.steps_per_epoch,
                              self.batch_size)
    for i in range(self.steps_per_epoch):
      yield _gather(self.images, self.labels, process_share(order[i]))

  def test_batches(self, batch_size):
    for i in range(0, len(self.test_images), batch_size):
      share = process_share(np.arange(i, min(i + batch_size,
                                             len(self.test_images))))
      yield self.test_images[share], self.test_labels[share]


def process_share(indices):
  """The slice of a global batch that this process loads (multi-host)."""
  n = len(indices) // jax.process_count()
  return indices[jax.process_index() * n:(jax.process_index() + 1) * n]


@partial(jax.jit, static_argnums=(1, 2, 3))
def _shuffled_batches(key, num_examples, steps, batch_size):
  order = jax.random.permutation(key, num_examples)
  return order[:steps * batch_size].reshape(steps, batch_size)


@jax.jit
def _gather(images, labels, indices):
  return images[indices], labels[indices]


class StreamedData:
  """A large TFDS dataset (ImageNet) read and augmented on the host."""

  def __init__(self, config):
    self.train = input_pipeline.data_source(config.dataset, 'train')
    self.test = input_pipeline.data_source(config.dataset, 'validation')
    self.size = config.image_shape[0]
    self.batch_size = config.batch_size
    self.steps_per_epoch = len(self.train) // config.batch_size

  def train_batches(self, key):
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    order = rng.permutation(len(self.train))
    for i in range(self.steps_per_epoch):
      yield input_pipeline.load_batch(self.train, process_share(
          order[i * self.batch_size:(i + 1) * self.batch_size]), self.size,
                                      rng)

  def test_batches(self, batch_size):
    for i in range(0, len(self.test), batch_size):
      yield input_pipeline.load_batch(self.test, process_share(
          np.arange(i, min(i + batch_size, len(self.test)))), self.size)


def load_data(config):
  if config.dataset in input_pipeline.STREAMED:
    if config.get('holdout_fraction'):
      raise ValueError('config.holdout_fraction is for in-memory datasets; '
                       f'{config.dataset} has its own validation split.')
    return StreamedData(config)
  return InMemoryData(config)


def global_batch(arrays, mesh, pad=False):
  """Assembles each process's share into arrays split over the mesh.

  With ``pad``, the share is padded to a multiple of the local devices with
  zeros (images) and -1 (labels, which no prediction matches).
  """
  if mesh is None:
    return arrays
  target = sharding.batch_sharding(mesh)
  if pad:
    local = mesh.size // jax.process_count()
    images, labels = (np.asarray(x) for x in arrays)
    missing = -len(images) % local
    arrays = (np.concatenate([images, np.zeros((missing, *images.shape[1:]),
                                               images.dtype)]),
              np.concatenate([labels, np.full(missing, -1, labels.dtype)]))
  return tuple(_to_global(x, target) for x in arrays)


def _to_global(x, target):
  if isinstance(x, jax.Array) and jax.process_count() == 1:
    return jax.device_put(x, target)  # stays on the devices
  return jax.make_array_from_process_local_data(target, np.asarray(x))


def make_train_epoch(graphdef, config, mesh=None, shardings=None):
  """One epoch: the data's batches for this epoch, through the jitted step.

  A Python loop rather than ``lax.scan``: XLA:CPU runs convolutions inside a
  loop body several times slower (7.6x measured on LeNet-5's convolutions).
  """
  train_step = make_train_step(graphdef, config, mesh, shardings)

  def train_epoch(state, data, key):
    k_order, k_aug = jax.random.split(key)
    keys = jax.random.split(k_aug, data.steps_per_epoch)
    losses, accuracies = [], []
    for i, batch in enumerate(data.train_batches(k_order)):
      images, labels = global_batch(batch, mesh)
      state, (loss, accuracy) = train_step(state, images, labels, keys[i])
      losses.append(loss)
      accuracies.append(accuracy)
    return state, {'loss': jnp.mean(jnp.stack(losses)),
                   'train_accuracy': jnp.mean(jnp.stack(accuracies))}

  return train_epoch


def evaluate(model, data, config, mesh=None):
  """Top-1 accuracy over the whole test split, in batches."""
  model.eval()
  @nnx.jit
  def correct(model, x, y):
    hits = jnp.sum(jnp.argmax(model(preprocess(x, config)), -1) == y)
    return hits, jnp.sum(y >= 0)
  total = count = 0
  for batch in data.test_batches(config.eval_batch_size):
    hits, real = correct(model, *global_batch(batch, mesh, pad=True))
    total += int(hits)
    count += int(real)
  model.train()
  return total / count


def mask_stats(optimizer):
  """Threshold and active count of GSM's mask state (None in other phases)."""
  found = gsm_optax.find_mask_state(optimizer.opt_state)
  if found is None:
    return {}
  return {'num_active': int(found.num_active[...]),
          'threshold': float(found.threshold[...])}


class Checkpoints:
  """Orbax checkpoints of (model, optimizer) after every epoch."""

  def __init__(self, workdir):
    self.manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, 'checkpoints')),
        options=ocp.CheckpointManagerOptions(max_to_keep=2))

  def latest_epoch(self):
    return self.manager.latest_step() or 0

  def save(self, epoch, model, optimizer):
    self.manager.save(epoch, args=ocp.args.Composite(
        model=ocp.args.StandardSave(nnx.state(model)),
        optimizer=ocp.args.StandardSave(nnx.state(optimizer))))
    self.manager.wait_until_finished()

  def restore(self, epoch, model, optimizer=None):
    items = {'model': ocp.args.StandardRestore(nnx.state(model))}
    if optimizer is not None:
      items['optimizer'] = ocp.args.StandardRestore(nnx.state(optimizer))
    restored = self.manager.restore(epoch, args=ocp.args.Composite(**items))
    nnx.update(model, restored['model'])
    if optimizer is not None:
      nnx.update(optimizer, restored['optimizer'])


class Snapshots:
  """The model at the end of each phase, kept for tickets and the report."""

  def __init__(self, workdir):
    self.directory = os.path.abspath(os.path.join(workdir, 'phase_ends'))

  def save(self, name, model):
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(self.directory, name), nnx.state(model),
                      force=True)
    checkpointer.wait_until_finished()  # saves are asynchronous

  def load(self, name, config):
    model = models.create_model(config.model, config.num_classes, config.seed)
    state = ocp.StandardCheckpointer().restore(
        os.path.join(self.directory, name), nnx.state(model))
    nnx.update(model, state)
    return model


def truncate_jsonl(path, last_epoch):
  """Drops records of epochs after the last checkpoint (they are redone)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    kept = [l for l in f if json.loads(l)['epoch'] <= last_epoch]
  with open(path, 'w') as f:
    f.writelines(kept)


def append_jsonl(path, record):
  if jax.process_index() != 0:
    return
  with open(path, 'a') as f:
    f.write(json.dumps(record) + '\n')


def train_and_evaluate(config, workdir: str) -> dict:
  """Runs every phase (resuming from ``workdir``), prunes, and reports.

  Args:
    config: an `ml_collections.ConfigDict` (see ``examples/configs``).
    workdir: where checkpoints, ``metrics.jsonl`` and the report go.

  Returns:
    The report as a dict (also written to ``workdir/report.json``).
  """
  os.makedirs(workdir, exist_ok=True)
  data = load_data(config)
  steps_per_epoch = data.steps_per_epoch
  if steps_per_epoch == 0:
    raise ValueError(f'config.batch_size={config.batch_size} exceeds the '
                     'number of training examples.')

  mesh = sharding.make_mesh(config)
  if mesh is not None and config.batch_size % mesh.size:
    raise ValueError(f'config.batch_size={config.batch_size} must be '
                     f'divisible by the {mesh.size} devices of the mesh.')
  model = models.create_model(config.model, config.num_classes, config.seed)
  checkpoints = Checkpoints(workdir)
  done = checkpoints.latest_epoch()
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  truncate_jsonl(metrics_path, done)
  results_path = os.path.join(workdir, 'phase_results.json')
  results = (json.load(open(results_path)) if os.path.exists(results_path)
             else {})
  root_key = jax.random.key(config.seed)

  snapshots = Snapshots(workdir)
  if config.dense_from and done == 0:  # share one dense model across runs
    nnx.update(model, nnx.state(Snapshots(config.dense_from).load('dense',
                                                                  config)))
    snapshots.save('dense', model)
    with open(os.path.join(config.dense_from, 'phase_results.json')) as f:
      results['dense'] = json.load(f)['dense']
  first = 0
  for phase in make_phases(config, steps_per_epoch, snapshots):
    last = first + phase.epochs
    if done >= last:  # finished before an interruption
      first = last
      continue
    optimizer = nnx.Optimizer(model, phase.make_tx(), wrt=nnx.Param)
    if done > first:  # resume inside this phase
      checkpoints.restore(done, model, optimizer)
    elif phase.start_from is not None:
      phase.start_from(model)
    elif done > 0:  # continue from where the previous phase ended
      checkpoints.restore(done, model)
    graphdef, state = nnx.split((model, optimizer))
    state, shardings = sharding.place(state, mesh, config.sharding)
    train_epoch = make_train_epoch(graphdef, config, mesh, shardings)
    bar = tqdm.tqdm(range(max(done, first), last), desc=phase.name,
                    initial=max(done, first) - first, total=phase.epochs,
                    unit='epoch', dynamic_ncols=True)
    for epoch in bar:
      start = time.time()
      state, stats = train_epoch(state, data,
                                 jax.random.fold_in(root_key, epoch))
      nnx.update((model, optimizer), state)
      record = {'epoch': epoch + 1, 'phase': phase.name,
                'loss': float(stats['loss']),
                'train_accuracy': float(stats['train_accuracy']),
                **mask_stats(optimizer), 'seconds': time.time() - start}
      bar.set_postfix({k: (f'{v:.4g}' if isinstance(v, float) else v)
                       for k, v in record.items()
                       if k not in ('epoch', 'phase', 'seconds')})
      if epoch + 1 == last:
        record['test_accuracy'] = evaluate(model, data, config, mesh)
        results[phase.name] = record['test_accuracy']
        if jax.process_index() == 0:
          with open(results_path, 'w') as f:
            json.dump(results, f)
        snapshots.save(phase.name, model)
      append_jsonl(metrics_path, record)
      if (epoch + 1) % config.checkpoint_every_epochs == 0 or epoch + 1 == last:
        checkpoints.save(epoch + 1, model, optimizer)
    done = first = last
  return finish(config, workdir, snapshots.load(config.pruning, config),
                results, data, mesh)


def finish(config, workdir, model, results, data, mesh=None):
  """Final global magnitude prune, evaluation with no fine-tuning, report.

  A model whose parameters are not finite (training diverged) is evaluated
  as it is, unpruned, and reported with ``diverged: True``.
  """
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  diverged = not all(bool(jnp.all(jnp.isfinite(x)))
                     for x in jax.tree.leaves(params))
  if diverged:  # no ranking to prune by: report the model as it is
    print(f'{config.pruning} at {config.ratio:g}x diverged: the parameters '
          'are not finite, so they are not pruned.')
    pruned = params
  else:
    pruned, _ = gsm_optax.prune(params, config.ratio, method=config.method)
  nnx.update(model, pruned)
  if mesh is not None:  # replicated, to evaluate with the global batches
    nnx.update(model, sharding.place(nnx.state(model), mesh, 'data')[0])
  report = gsm_optax.sparsity_report(pruned)
  summary = {
      'model': config.model, 'dataset': config.dataset, 'ratio': config.ratio,
      'evaluated_on': ('validation' if config.get('holdout_fraction')
                       else 'test'),
      'dense_accuracy': results.get('dense'),
      'pruning': config.pruning,
      'accuracy_before_prune': results.get(config.pruning),
      'pruned_accuracy': evaluate(model, data, config, mesh),
      'ticket_accuracy': results.get('ticket_' + config.pruning),
      'ticket_magnitude_accuracy': results.get('ticket_magnitude'),
      'compression': report.compression,
      'kept_weights': report.prunable_nonzero,
      'prunable_weights': report.prunable_size,
      'sparsity': report.to_dict(),
      'diverged': diverged,
  }
  if jax.process_index() != 0:
    return summary
  with open(os.path.join(workdir, 'report.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  plot_density(report, os.path.join(workdir, 'layer_density.png'),
               f'{config.model}: per-layer density after {config.pruning} at '
               f'{config.ratio:g}x')
  print(format_report(summary, report))
  return summary


def format_report(summary, report) -> str:
  def pct(x):
    return 'n/a' if x is None else f'{100 * x:.2f}%'
  return '\n'.join([
      '',
      f"== {summary['model']} on {summary['dataset']}, "
      f"{summary['pruning']} at {summary['ratio']:g}x ==",
      f"dense accuracy:                 {pct(summary['dense_accuracy'])}",
      f"accuracy before the prune:      "
      f"{pct(summary['accuracy_before_prune'])}",
      f"pruned accuracy (no fine-tune): {pct(summary['pruned_accuracy'])}",
      f"kept {summary['kept_weights']:,} of {summary['prunable_weights']:,} "
      f"prunable weights: {summary['compression']:.1f}x",
      *([f"lottery tickets retrained from init: {summary['pruning']} "
         f"{pct(summary['ticket_accuracy'])}, magnitude "
         f"{pct(summary['ticket_magnitude_accuracy'])}"]
        if summary['ticket_accuracy'] is not None else []),
      '', str(report)])


def plot_density(report, path, title):
  """Bar chart of the density of every prunable layer."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  rows = [l for l in report.leaves if l.prunable]
  fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(rows) + 2), 3.5))
  ax.bar(range(len(rows)), [100 * l.density for l in rows])
  ax.set_xticks(range(len(rows)))
  ax.set_xticklabels([l.path.replace("']['", '.').strip("[]'")
                      for l in rows], rotation=60, ha='right', fontsize=7)
  ax.set_ylabel('density (% weights kept)')
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
