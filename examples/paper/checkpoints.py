"""What a run writes as it goes: orbax checkpoints, model snapshots, metrics.

Checkpoints let a killed run resume exactly. They are numbered by training
step: at epoch ends (model and optimizer), and inside an epoch every
``config.checkpoint_every_steps`` steps, where they also hold the data
iterator's state (Grain's, for streamed datasets) and the epoch's running
metrics, so that a resumed run continues with the next batch. Snapshots
keep the model at the end of each phase (the dense start that the
baselines share, the tickets' masks); ``metrics.jsonl`` gets one line per
epoch, from process 0.
"""

import json
import os

import flax.nnx as nnx
import jax
import orbax.checkpoint as ocp

from examples.paper import models


class Checkpoints:
  """Orbax checkpoints of (model, optimizer), numbered by training step."""

  def __init__(self, workdir):
    self.manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, 'checkpoints')),
        options=ocp.CheckpointManagerOptions(max_to_keep=2))

  def latest_step(self):
    return self.manager.latest_step() or 0

  def save(self, step, model, optimizer, data=None, progress=None):
    """Saves after ``step`` training steps.

    Args:
      step: training steps done.
      model, optimizer: the NNX model and optimizer.
      data: inside an epoch, the data iterator's orbax save args (e.g.
        ``grain.PyGrainCheckpointSave``), if it has state.
      progress: inside an epoch, a JSON-able dict (the running metrics).
    """
    items = {'model': ocp.args.StandardSave(nnx.state(model)),
             'optimizer': ocp.args.StandardSave(nnx.state(optimizer))}
    if data is not None:
      items['data'] = data
    if progress is not None:
      items['progress'] = ocp.args.JsonSave(progress)
    self.manager.save(step, args=ocp.args.Composite(**items))
    self.manager.wait_until_finished()

  def restore(self, step, model=None, optimizer=None, data=None,
              progress=False):
    """Restores what is asked for: the model and optimizer in place, the
    data iterator's state through its orbax restore args (e.g.
    ``grain.PyGrainCheckpointRestore``), and returns the progress dict
    (or None)."""
    items = {}
    if model is not None:
      items['model'] = ocp.args.StandardRestore(nnx.state(model))
    if optimizer is not None:
      items['optimizer'] = ocp.args.StandardRestore(nnx.state(optimizer))
    if data is not None:
      items['data'] = data
    if progress:
      items['progress'] = ocp.args.JsonRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    if model is not None:
      nnx.update(model, restored['model'])
    if optimizer is not None:
      nnx.update(optimizer, restored['optimizer'])
    return restored['progress'] if progress else None


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
    model = models.from_config(config)
    state = ocp.StandardCheckpointer().restore(
        os.path.join(self.directory, name), nnx.state(model))
    nnx.update(model, state)
    return model


def truncate_jsonl(path, last_epoch):
  """Drops records of epochs after the last checkpoint (they are redone).

  Process 0 alone rewrites the file (as only it appends), to a temporary
  name then renamed: with every process of a run rewriting it, one could
  read it while another had emptied it, and write back nothing.
  """
  if jax.process_index() != 0 or not os.path.exists(path):
    return
  with open(path) as f:
    kept = [l for l in f if json.loads(l)['epoch'] <= last_epoch]
  with open(path + '.tmp', 'w') as f:
    f.writelines(kept)
  os.replace(path + '.tmp', path)


def append_jsonl(path, record):
  if jax.process_index() != 0:
    return
  with open(path, 'a') as f:
    f.write(json.dumps(record) + '\n')
