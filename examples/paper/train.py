"""The training loop: run the phases, prune, evaluate, report.

Every experiment runs the same `train_and_evaluate(config, workdir)`:
train (or resume) a dense model, train it with GSM at ``config.ratio``, prune
the Q largest |w| globally, evaluate with no fine-tuning, and write the
report. Each epoch feeds its batches to one jitted train step; orbax saves
the model and optimizer after every epoch (and, with
``config.checkpoint_every_steps``, inside epochs with the data iterator's
state), so a killed run resumes exactly.

Long because it is the whole loop (the step, the epoch with its mid-epoch
checkpoints and resume, evaluation, GSM's statistics, the phases and the
final prune), and each part is read with the others.
"""

import functools
from functools import partial
import json
import os
import time

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from examples.paper import checkpoints as checkpoints_lib
from examples.paper import data as data_lib
from examples.paper import deploy
from examples.paper import input_pipeline
from examples.paper import models
from examples.paper import phases as phases_lib
from examples.paper import report as report_lib
from examples.paper import sharding
import gsm_optax


def normalize(images, mean, std):
  """uint8 images -> float32, ``(x / 255 - mean) / std``."""
  return ((images.astype(jnp.float32) / 255.0 - jnp.asarray(mean)) /
          jnp.asarray(std))


def preprocess(images, config, key=None):
  """uint8 NHWC -> normalised float; random pad-4 crop + flip if augmenting."""
  x = normalize(images, *input_pipeline.normalization(config))
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
  ``shardings`` (replicated or FSDP, see `examples.paper.sharding`).
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
    metrics = {'loss': loss,
               'train_accuracy': jnp.mean(jnp.argmax(logits, -1) == labels)}
    found = gsm_optax.find_mask_state(optimizer.opt_state)
    if found is not None and found.num_entered is not None:
      metrics['entered'] = jnp.asarray(found.num_entered[...], jnp.float32)
    return constrain(nnx.state((model, optimizer)), shardings), metrics

  return train_step


def make_train_epoch(graphdef, config, mesh=None, shardings=None):
  """One epoch: the data's batches for this epoch, through the jitted step.

  A Python loop rather than ``lax.scan``: XLA:CPU runs convolutions inside a
  loop body several times slower (docs: performance).
  """
  train_step = make_train_step(graphdef, config, mesh, shardings)

  def train_epoch(state, data, key, start=0, resume=None, checkpoint=None):
    """Runs the epoch from batch ``start`` on.

    Args:
      state: the (model, optimizer) state.
      data: an `InMemoryData` or `StreamedData`.
      key: the epoch's key (order and augmentation follow from it).
      start: the first batch (> 0 when resuming inside the epoch).
      resume: with ``start``, ``resume(batches)`` restores the data
        iterator's state and returns the epoch's progress so far.
      checkpoint: ``checkpoint(step_in_epoch, state, batches, progress)``,
        called every ``config.checkpoint_every_steps`` steps inside the
        epoch (not at its end).

    Returns:
      The state and the epoch's means of the step's metrics (loss,
      training accuracy, and GSM's ``entered``, weights entering the active
      set, where it tracks churn).
    """
    k_order, k_aug = jax.random.split(key)
    keys = jax.random.split(k_aug, data.steps_per_epoch)
    batches = data.train_batches(k_order, start)
    history = {}  # metric name -> one value per step
    if start:
      history = {k: [jnp.float32(v) for v in values]
                 for k, values in resume(batches).items()}
    every = config.get('checkpoint_every_steps', 0)
    for i, batch in zip(range(start, data.steps_per_epoch), batches):
      images, labels = data_lib.global_batch(batch, mesh)
      state, metrics = train_step(state, images, labels, keys[i])
      for k, v in metrics.items():
        history.setdefault(k, []).append(v)
      if every and (i + 1) % every == 0 and i + 1 < data.steps_per_epoch:
        checkpoint(i + 1, state, batches,
                   {k: [float(v) for v in values]
                    for k, values in history.items()})
    return state, {k: jnp.mean(jnp.stack(values))
                   for k, values in history.items()}

  return train_epoch


@functools.cache
def _correct(mean, std):
  """The jitted hit count of a batch normalised by ``mean``, ``std``: one
  function for every evaluation of a process, so a model (graph) is
  compiled once, not once per call."""
  @nnx.jit
  def correct(model, x, y):
    hits = jnp.sum(jnp.argmax(model(normalize(x, mean, std)), -1) == y)
    return hits, jnp.sum(y >= 0)
  return correct


def evaluate(model, data, config, mesh=None):
  """Top-1 accuracy over the whole test split, in batches."""
  model.eval()
  correct = _correct(*(tuple(np.ravel(v).tolist()) for v in
                       input_pipeline.normalization(config)))
  total = count = 0
  for batch in data.test_batches(config.eval_batch_size):
    hits, real = correct(model, *data_lib.global_batch(batch, mesh, pad=True))
    total += int(hits)
    count += int(real)
  model.train()
  return total / count


def mask_stats(model, optimizer, config):
  """GSM's threshold and active count, the share of the kernels' norm that
  the final prune would remove now, and whether that is more than the
  library's tolerance (`gsm_optax.check_final_prune`; empty in other
  phases)."""
  found = gsm_optax.find_mask_state(optimizer.opt_state)
  if found is None:
    return {}
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  check = gsm_optax.check_final_prune(params, config.ratio,
                                      method=config.method, warn=False,
                                      **phases_lib.prune_structure(config))
  return {'num_active': int(found.num_active[...]),
          'threshold': float(found.threshold[...]),
          'pruned_norm_share': check.share,
          'prune_warning': not check.ok}


def last_mask_accuracy(model, optimizer, data, config, mesh=None):
  """Accuracy with every weight outside the last step's active set zeroed
  (GSM with ``track_churn``, which keeps that mask; else None): the final
  prune by the mask instead of by magnitude."""
  found = gsm_optax.find_mask_state(optimizer.opt_state)
  if found is None or not found.active:
    return None
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))  # arrays: a copy
  leaves, treedef = jax.tree.flatten(params)
  groups = phases_lib.groups_for(config)
  if groups is not None:  # one mask over the groups
    masks = groups.expand(found.active[0][...], params)
  else:
    ranked = [i for i, f in enumerate(jax.tree.leaves(
        gsm_optax.default_prunable(params))) if f]
    masks = {i: a[...] for i, a in zip(ranked, found.active)}
  masked = [jnp.where(masks[i], x, 0) if i in masks else x
            for i, x in enumerate(leaves)]
  nnx.update(model, jax.tree.unflatten(treedef, masked))
  accuracy = evaluate(model, data, config, mesh)
  nnx.update(model, params)  # (nnx.state is a view: it would be masked too)
  return accuracy


def train_and_evaluate(config, workdir: str) -> dict:
  """Runs every phase (resuming from ``workdir``), prunes, and reports.

  Args:
    config: an `ml_collections.ConfigDict` (see ``examples/paper/configs``).
    workdir: where checkpoints, ``metrics.jsonl`` and the report go.

  Returns:
    The report as a dict (also written to ``workdir/report.json``).
  """
  os.makedirs(workdir, exist_ok=True)
  data = data_lib.load_data(config)
  steps_per_epoch = data.steps_per_epoch
  if steps_per_epoch == 0:
    raise ValueError(f'config.batch_size={config.batch_size} exceeds the '
                     'number of training examples.')

  mesh = sharding.make_mesh(config)
  if mesh is not None and config.batch_size % mesh.size:
    raise ValueError(f'config.batch_size={config.batch_size} must be '
                     f'divisible by the {mesh.size} devices of the mesh.')
  model = models.from_config(config)
  checkpoints = checkpoints_lib.Checkpoints(workdir)
  done, offset = divmod(checkpoints.latest_step(), steps_per_epoch)
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  checkpoints_lib.truncate_jsonl(metrics_path, done)
  results_path = os.path.join(workdir, 'phase_results.json')
  results = (json.load(open(results_path)) if os.path.exists(results_path)
             else {})
  root_key = jax.random.key(config.seed)

  snapshots = checkpoints_lib.Snapshots(workdir)
  if config.dense_from and done == offset == 0:  # share one dense model
    nnx.update(model, nnx.state(checkpoints_lib.Snapshots(config.dense_from).load('dense',
                                                                  config)))
    snapshots.save('dense', model)
    with open(os.path.join(config.dense_from, 'phase_results.json')) as f:
      results['dense'] = json.load(f)['dense']
  first = 0
  for phase in phases_lib.make_phases(config, steps_per_epoch, snapshots):
    last = first + phase.epochs
    if done >= last:  # finished before an interruption
      first = last
      continue
    optimizer = nnx.Optimizer(model, phase.make_tx(), wrt=nnx.Param)
    if done > first or offset:  # resume inside this phase
      checkpoints.restore(checkpoints.latest_step(), model, optimizer)
    elif phase.start_from is not None:
      phase.start_from(model)
    elif done > 0:  # continue from where the previous phase ended
      checkpoints.restore(done * steps_per_epoch, model)
    graphdef, state = nnx.split((model, optimizer))
    state, shardings = sharding.place(state, mesh, config.sharding)
    train_epoch = make_train_epoch(graphdef, config, mesh, shardings)
    bar = tqdm.tqdm(range(max(done, first), last), desc=phase.name,
                    initial=max(done, first) - first, total=phase.epochs,
                    unit='epoch', dynamic_ncols=True)
    for epoch in bar:
      start = time.time()

      def checkpoint(step, state, batches, progress, epoch=epoch):
        nnx.update((model, optimizer), state)
        checkpoints.save(epoch * steps_per_epoch + step, model, optimizer,
                         data.checkpoint_args(batches), progress)

      def resume(batches, epoch=epoch, offset=offset):
        return checkpoints.restore(
            epoch * steps_per_epoch + offset,
            data=data.checkpoint_args(batches, restore=True), progress=True)

      state, stats = train_epoch(state, data,
                                 jax.random.fold_in(root_key, epoch),
                                 start=offset, resume=resume,
                                 checkpoint=checkpoint)
      offset = 0
      nnx.update((model, optimizer), state)
      record = {'epoch': epoch + 1, 'phase': phase.name,
                'loss': float(stats['loss']),
                'train_accuracy': float(stats['train_accuracy']),
                **mask_stats(model, optimizer, config)}
      if 'entered' in stats:  # GSM's churn: mean weights entering per step
        record['entered_per_step'] = float(stats['entered'])
      record['seconds'] = time.time() - start
      bar.set_postfix({k: (f'{v:.4g}' if isinstance(v, float) else v)
                       for k, v in record.items()
                       if k not in ('epoch', 'phase', 'seconds')})
      if epoch + 1 == last:
        record['test_accuracy'] = evaluate(model, data, config, mesh)
        results[phase.name] = record['test_accuracy']
        by_mask = last_mask_accuracy(model, optimizer, data, config, mesh)
        if by_mask is not None:
          results[phase.name + '_last_mask'] = by_mask
        if jax.process_index() == 0:
          with open(results_path, 'w') as f:
            json.dump(results, f)
        snapshots.save(phase.name, model)
      checkpoints_lib.append_jsonl(metrics_path, record)
      if (epoch + 1) % config.checkpoint_every_epochs == 0 or epoch + 1 == last:
        checkpoints.save((epoch + 1) * steps_per_epoch, model, optimizer)
    done = first = last
  return finish(config, workdir, snapshots.load(config.pruning, config),
                results, data, mesh, snapshots)


def outputs_of(model, config):
  """``fn(params, images)``: the model's eval-mode logits with ``params``
  in place of its parameters (its other state, batch statistics, kept)."""
  model.eval()
  graphdef, params_state, rest = nnx.split(model, nnx.Param, ...)
  model.train()
  mean_std = input_pipeline.normalization(config)

  @jax.jit
  def fn(params, images):
    state = jax.tree.map(lambda x: x, params_state)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state, rest)(normalize(images, *mean_std))
  return fn


def finish(config, workdir, model, results, data, mesh=None,
           snapshots=None):
  """Final global magnitude prune, evaluation with no fine-tuning, report.

  A model whose parameters are not finite (training diverged) is evaluated
  as it is, unpruned, and reported with ``diverged: True``. Otherwise the
  pruned model is saved (an orbax snapshot ``pruned`` and a sparse file) and
  its forward pass timed dense and sparse (`deploy.export`).
  """
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  diverged = not all(bool(jnp.all(jnp.isfinite(x)))
                     for x in jax.tree.leaves(params))
  structure = phases_lib.prune_structure(config)
  judge = {}
  if not diverged and jax.process_count() == 1:  # by held-out predictions
    held_out = next(data.test_batches(config.eval_batch_size))[0]
    judge = {'fn': outputs_of(model, config),
             'inputs': jnp.asarray(held_out)}
  check = gsm_optax.check_final_prune(params, config.ratio,
                                      method=config.method, warn=False,
                                      **structure, **judge)
  if diverged:  # no ranking to prune by: report the model as it is
    print(f'{config.pruning} at {config.ratio:g}x diverged: the parameters '
          'are not finite, so they are not pruned.')
    pruned = params
  else:
    pruned, _ = gsm_optax.prune(params, config.ratio, method=config.method,
                                **structure)
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
      'last_mask_accuracy': results.get(config.pruning + '_last_mask'),
      'pruned_norm_share': check.share,
      'predictions_changed': check.changed,
      'prune_warning': check.message,
      'compression': report.compression,
      'kept_weights': report.prunable_nonzero,
      'prunable_weights': report.prunable_size,
      'sparsity': report.to_dict(),
      'diverged': diverged,
  }
  if snapshots is not None and not diverged and config.export:
    batch = next(data.test_batches(config.eval_batch_size))[0]
    summary['deploy'] = deploy.export(model, workdir, snapshots,
                                      preprocess(batch, config))
    if structure:
      summary['slim'] = deploy.export_slim(model, structure['groups'],
                                           workdir, preprocess(batch, config))
  if jax.process_index() != 0:
    return summary
  with open(os.path.join(workdir, 'report.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  report_lib.plot_density(report, os.path.join(workdir, 'layer_density.png'),
               f'{config.model}: per-layer density after {config.pruning} at '
               f'{config.ratio:g}x')
  print(report_lib.format_report(summary, report))
  return summary
