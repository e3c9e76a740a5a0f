"""What a pruning run leaves to deploy: the pruned model, as an orbax
snapshot and as a compact sparse file, and how fast it runs sparse."""

import os

import flax.nnx as nnx
import jax
import numpy as np
import orbax.checkpoint as ocp

from examples.paper import timing
import gsm_optax

SPARSE_FILE = 'pruned_sparse.npz'


def directory_bytes(path):
  return sum(os.path.getsize(os.path.join(root, f))
             for root, _, files in os.walk(path) for f in files)


def export(model, workdir, snapshots, images, repeats=20):
  """Saves the pruned model and times its forward pass dense and sparse.

  Args:
    model: the pruned model.
    workdir: the run's directory; the sparse file goes there.
    snapshots: the run's `checkpoints.Snapshots` (gets ``'pruned'``).
    images: a batch to time the forward pass on (preprocessed).
    repeats: timed calls of each, alternated, after compilation.

  Returns:
    The file sizes and the timing, for the report (process 0; the others
    only take part in the orbax save and get None).
  """
  snapshots.save('pruned', model)
  if jax.process_index() != 0:
    return None
  model.eval()
  graphdef, state = nnx.split(model)
  state = jax.device_get(nnx.to_pure_dict(state))
  path = os.path.join(workdir, SPARSE_FILE)
  file_bytes = gsm_optax.save_sparse(path, state)
  # The x @ W kernels run sparse (gsm_optax.matmul_kernels); convolutions
  # stay dense.
  sparse_state = gsm_optax.to_sparse(state)
  forward = lambda p, x: nnx.merge(graphdef, p)(x)
  dense_fn = jax.jit(forward)
  sparse_fn = jax.jit(gsm_optax.sparse_apply(forward))
  seconds = timing.median_seconds(
      {'dense': lambda: dense_fn(state, images),
       'sparse': lambda: sparse_fn(sparse_state, images)}, repeats)
  dense, sparse = seconds['dense'], seconds['sparse']
  model.train()
  return {'sparse_file': SPARSE_FILE, 'sparse_file_bytes': file_bytes,
          'pruned_snapshot_bytes': directory_bytes(
              os.path.join(snapshots.directory, 'pruned')),
          'dense_array_bytes': sum(np.asarray(x).nbytes for x in
                                   jax.tree.leaves(state)),
          'inference': {'batch': int(images.shape[0]), 'repeats': repeats,
                        'dense_seconds': dense, 'sparse_seconds': sparse,
                        'speedup': dense / sparse}}


SLIM_FILE = 'slim_model.bin'


def export_slim(model, groups, workdir, images, repeats=20):
  """The structured prune's slim model: the passive groups cut out, exported
  with `jax.export` (weights inside: it runs without this code), saved with
  orbax, and its forward pass timed against the full model's.

  Returns:
    The channels kept, the parameters and FLOPs before and after, the file
    sizes and the timing (process 0; the others get None).
  """
  if jax.process_index() != 0:
    return None
  model.eval()
  graphdef, state = nnx.split(model)
  state = jax.device_get(nnx.to_pure_dict(state))
  forward = lambda p, x: nnx.merge(graphdef, p)(x)
  slim_state, slim_fn, info = gsm_optax.slim(forward, state, groups)
  blob = gsm_optax.export_slim(slim_fn, slim_state, images)
  with open(os.path.join(workdir, SLIM_FILE), 'wb') as f:
    f.write(blob)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(os.path.abspath(workdir), 'slim_state'),
                    slim_state, force=True)
  checkpointer.wait_until_finished()
  dense_fn, small_fn = jax.jit(forward), jax.jit(slim_fn)
  seconds = timing.median_seconds(
      {'dense': lambda: dense_fn(state, images),
       'slim': lambda: small_fn(slim_state, images)}, repeats)
  model.train()
  return {'channels': [list(c) for c in info.channels],
          'params': list(info.params), 'flops': list(info.flops),
          'artefact': SLIM_FILE, 'artefact_bytes': len(blob),
          'slim_array_bytes': sum(np.asarray(x).nbytes for x in
                                  jax.tree.leaves(slim_state)),
          'inference': {'batch': int(images.shape[0]), 'repeats': repeats,
                        'dense_seconds': seconds['dense'],
                        'slim_seconds': seconds['slim'],
                        'speedup': seconds['dense'] / seconds['slim']}}
