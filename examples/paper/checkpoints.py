"""What a run writes as it goes: orbax checkpoints, model snapshots, metrics.

Checkpoints (model and optimizer after every epoch) let a killed run resume
exactly; snapshots keep the model at the end of each phase (the dense start
that the baselines share, the tickets' masks); ``metrics.jsonl`` gets one
line per epoch, from process 0.
"""

import json
import os

import flax.nnx as nnx
import jax
import orbax.checkpoint as ocp

from examples.paper import models


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
