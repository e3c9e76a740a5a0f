"""Inference of a pruned model, dense against sparse; and its file sizes.

Usage: python -m benchmarks.speed.inference [--repeats 50] [--json out.json]

For LeNet-300-100 at 60x and LeNet-5 at 125x and 300x, the models of the
examples get the per-layer densities that GSM found in the accuracy
benchmark (seed 0, ``benchmarks/results/accuracy``), with random kept
weights. The forward pass (`nnx.merge(graphdef, params)(x)`, jitted) runs
with the dense pruned params and through `gsm_optax.sparse_apply` with the
dense kernels as `SparseKernel` (conv kernels stay dense: only ``x @ W``
runs sparse), at batch 1 to 4096; medians of ``--repeats`` calls after
compilation, all in one process, dense and sparse alternated; and
`gsm_optax.sparse_forward`, which runs dense below its batch threshold.
File sizes: the dense params as an orbax
checkpoint (before pruning, and after, where orbax's compression shrinks the
zeros), the pruned params gzipped as ``.npz``, and `save_sparse`'s file.
"""

import argparse
import contextlib
import gzip
import io
import json
import os
import tempfile

import flax.nnx as nnx
import jax
import numpy as np
import orbax.checkpoint as ocp

from examples.paper import deploy
from examples.paper import models
from examples.paper import timing
import gsm_optax

RESULTS = os.path.join(os.path.dirname(__file__), '..', 'results', 'accuracy')
CASES = (('lenet300', 60.0), ('lenet5', 125.0), ('lenet5', 300.0))
BATCHES = (1, 16, 32, 64, 256, 4096)


def pruned_params(model_name, ratio, seed=0):
  """The model's params with GSM's per-layer counts of kept weights."""
  with open(os.path.join(RESULTS, f'{model_name}_gsm_r{ratio:g}_s0.json')) as f:
    counts = {l['path']: l['nonzero'] for l in json.load(f)['sparsity']['leaves']}
  model = models.create_model(model_name, 10, seed)
  graphdef, state = nnx.split(model)
  params = jax.tree.map(np.asarray, nnx.to_pure_dict(state))
  rng = np.random.default_rng(seed)

  def keep(path, x):
    x = np.asarray(x)
    if x.ndim < 2:
      return x
    mask = np.zeros(x.size, bool)
    mask[rng.choice(x.size, counts[jax.tree_util.keystr(path)], replace=False)] = True
    return np.where(mask.reshape(x.shape), x, 0).astype(x.dtype)

  return graphdef, params, jax.tree_util.tree_map_with_path(keep, params)


def orbax_bytes(params, path):
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, params)
  checkpointer.wait_until_finished()
  return deploy.directory_bytes(path)


def file_sizes(dense_params, params, tmp):
  """Bytes of: the unpruned model's orbax checkpoint, the pruned params'
  orbax checkpoint and gzipped .npz, and `save_sparse`'s file."""
  buffer = io.BytesIO()
  np.savez(buffer, **{jax.tree_util.keystr(p): x for p, x in
                      jax.tree_util.tree_flatten_with_path(params)[0]})
  sparse_bytes = gsm_optax.save_sparse(os.path.join(tmp, 'sparse.npz'), params)
  return {'orbax_unpruned': orbax_bytes(dense_params, os.path.join(tmp, 'u')),
          'orbax_pruned': orbax_bytes(params, os.path.join(tmp, 'p')),
          'gzip_pruned_npz': len(gzip.compress(buffer.getvalue())),
          'sparse_file': sparse_bytes}


@contextlib.contextmanager
def jax_bcsr_only():
  """Traces `sparse_apply` with jax's BCSR product instead of gsm_optax's
  CPU kernel (``GSM_OPTAX_NATIVE=0``), to time what the kernel gains."""
  old = os.environ.get('GSM_OPTAX_NATIVE')
  os.environ['GSM_OPTAX_NATIVE'] = '0'
  try:
    yield
  finally:
    if old is None:
      del os.environ['GSM_OPTAX_NATIVE']
    else:
      os.environ['GSM_OPTAX_NATIVE'] = old


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--repeats', type=int, default=50)
  parser.add_argument('--json', default=None)
  parser.add_argument('--models', default=None,
                      help='comma-separated subset, e.g. lenet300')
  args = parser.parse_args()
  rows = []
  for model_name, ratio in CASES:
    if args.models and model_name not in args.models.split(','):
      continue
    graphdef, unpruned, host_params = pruned_params(model_name, ratio)
    params = jax.device_put(host_params)
    forward = lambda p, x, g=graphdef: nnx.merge(g, p)(x)
    matmul_kernels = lambda p: jax.tree.map(lambda x: np.ndim(x) == 2, p)
    sparse_params = gsm_optax.to_sparse(params, prunable=matmul_kernels)
    dense_fn = jax.jit(forward)
    predict = gsm_optax.sparse_forward(forward, params, prunable=matmul_kernels)
    routes = {'sparse_apply': jax.jit(gsm_optax.sparse_apply(forward)),
              'sparse_forward': lambda p, x: predict(x)}
    bcsr_apply = jax.jit(gsm_optax.sparse_apply(forward))
    with tempfile.TemporaryDirectory() as tmp:
      sizes = file_sizes(unpruned, host_params, tmp)
    for batch in BATCHES:
      x = jax.device_put(np.random.default_rng(1).normal(
          size=(batch, 28, 28, 1)).astype(np.float32))
      np.testing.assert_allclose(routes['sparse_apply'](sparse_params, x),
                                 dense_fn(params, x), rtol=1e-4, atol=1e-4)
      calls = {'dense': lambda x=x: dense_fn(params, x)}
      calls.update({name: lambda f=f, x=x: f(sparse_params, x)
                    for name, f in routes.items()})
      with jax_bcsr_only():
        bcsr = bcsr_apply.lower(sparse_params, x).compile()
      calls['sparse_apply_jax_bcsr'] = lambda f=bcsr, x=x: f(sparse_params, x)
      seconds = timing.median_seconds(calls, args.repeats)
      rows.append({'model': model_name, 'ratio': ratio, 'batch': batch,
                   'seconds': seconds, 'bytes': sizes})
      print(f"{model_name} {ratio:g}x batch {batch:>4}: dense "
            f"{seconds['dense'] * 1e6:9.1f} us; speed-up " + ', '.join(
                f"{name} {seconds['dense'] / seconds[name]:.2f}x"
                for name in calls if name != 'dense'), flush=True)
    print(f"  files: orbax unpruned {sizes['orbax_unpruned']:,} B, orbax "
          f"pruned {sizes['orbax_pruned']:,} B, gzip pruned npz "
          f"{sizes['gzip_pruned_npz']:,} B, sparse {sizes['sparse_file']:,} B "
          f"(1/{sizes['orbax_unpruned'] / sizes['sparse_file']:.0f} of the "
          'unpruned checkpoint)')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'backend': jax.default_backend(),
                 'device': jax.devices()[0].device_kind,
                 'jax': jax.__version__, 'repeats': args.repeats,
                 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  main()
