"""The small example trains, prunes to the ratio and learns something."""

import flax.nnx as nnx
import jax
import numpy as np

from examples.mnist_nnx import train
import gsm_optax


def teacher_data(n, seed):
  """Images whose label a random linear teacher decides: learnable."""
  rng = np.random.default_rng(seed)
  images = rng.random((n, 28, 28), dtype=np.float32)
  teacher = np.random.default_rng(99).normal(size=(784, 10))
  return images, np.argmax(images.reshape(n, -1) @ teacher, -1).astype(np.int32)


def test_run_prunes_to_the_ratio_and_beats_chance(tmp_path):
  config = train.Config(ratio=20.0, batch_size=64, dense_epochs=3,
                        gsm_epochs=6, learning_rate=2e-2,
                        out_dir=str(tmp_path / 'out'))
  result = train.run(config, teacher_data(2048, 0), teacher_data(512, 1))
  report = result['report']
  assert report.prunable_size == 784 * 300 + 300 * 100 + 100 * 10
  q = report.prunable_size // 20
  assert report.prunable_nonzero >= q  # ties at the threshold are kept
  kernels = [np.abs(np.asarray(x)).ravel() for x in
             jax.tree.leaves(nnx.state(result['model'], nnx.Param))
             if x.ndim == 2]
  mags = np.concatenate(kernels)
  assert report.prunable_nonzero == np.count_nonzero(mags)
  assert np.count_nonzero(mags) == np.sum(mags >= np.sort(mags)[-q])
  assert [l.path for l in report.leaves if l.prunable] == [
      "['fc1']['kernel']", "['fc2']['kernel']", "['fc3']['kernel']"]
  assert result['dense_accuracy'] > 0.3  # chance is 0.1
  assert result['pruned_accuracy'] > 0.2

  # The saved file holds the pruned model: loaded dense, it is bit for bit
  # the pruned params; the sparse run's logits are the pruned model's.
  saved = gsm_optax.load_sparse(result['sparse_file'])
  params = nnx.to_pure_dict(nnx.state(result['model'], nnx.Param))
  for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, np.asarray(b))
  sparse_params = gsm_optax.load_sparse(result['sparse_file'], as_sparse=True)
  assert isinstance(sparse_params['fc1']['kernel'], gsm_optax.SparseKernel)
  images = teacher_data(512, 1)[0][:256]
  np.testing.assert_allclose(result['sparse_logits'], result['model'](images),
                             rtol=1e-4, atol=1e-4)
