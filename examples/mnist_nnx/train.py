"""GSM on a Flax NNX model, end to end: train dense, train with GSM, prune,
save the pruned model and run it sparse.

A small example to fork. It trains an MLP on Fashion-MNIST (or any
``(images, labels)`` arrays), then runs Global Sparse Momentum SGD at a
compression ratio C, prunes to ``floor(N / C)`` weights with no fine-tuning,
prints the per-layer sparsity, saves the pruned model as a compact sparse
file, loads it back and runs it with sparse products, checking that its
outputs are the pruned model's. Replace `MLP` with your own
``nnx.Module``: nothing else depends on it.
"""

import dataclasses
import gzip
import os

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import gsm_optax

IDX_DIR = '/usr/share/datasets/fashion-mnist'  # Debian's dataset-fashion-mnist


@dataclasses.dataclass
class Config:
  ratio: float = 60.0  # keep 1 weight in 60
  batch_size: int = 256
  dense_epochs: int = 5
  gsm_epochs: int = 20
  learning_rate: float = 3e-2  # GSM: the passive weights shrink by about
  momentum: float = 0.99       # exp(-lr * decay / (1 - momentum)) a step,
  weight_decay: float = 2e-3   # so these three set how fast they vanish
  # The recipe (docs: FAQ): rank a smoothed score so the same weights stay
  # passive (0: the paper's |g*w|), and shrink the passive weights by
  # passive_decay_steps / steps a step of their own, as the cosine schedule
  # takes the lr (and the weight decay with it) to zero (0: off).
  score_decay: float = 0.9
  passive_decay_steps: float = 10.0
  seed: int = 0
  out_dir: str = 'runs/mnist_nnx'  # where the pruned model is saved


class MLP(nnx.Module):
  """784-300-100-10 with ReLU (LeNet-300-100)."""

  def __init__(self, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(784, 300, rngs=rngs)
    self.fc2 = nnx.Linear(300, 100, rngs=rngs)
    self.fc3 = nnx.Linear(100, 10, rngs=rngs)

  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    return self.fc3(nnx.relu(self.fc2(nnx.relu(self.fc1(x)))))


def idx_dir() -> str:
  """Where the idx files are: ``$FASHION_MNIST_DIR``, else Debian's."""
  return os.environ.get('FASHION_MNIST_DIR') or IDX_DIR


def load_fashion_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
  """Images in [0, 1] (N, 28, 28) and labels (N,): idx files (`idx_dir`),
  else TFDS."""
  prefix = 'train' if split == 'train' else 't10k'
  if os.path.isdir(idx_dir()):
    arrays = []
    for kind, offset in (('images-idx3-ubyte', 16), ('labels-idx1-ubyte', 8)):
      path = os.path.join(idx_dir(), f'{prefix}-{kind}')
      path = path if os.path.exists(path) else path + '.gz'
      with (gzip.open if path.endswith('.gz') else open)(path, 'rb') as f:
        arrays.append(np.frombuffer(f.read(), np.uint8, offset=offset))
    images, labels = arrays[0].reshape(-1, 28, 28), arrays[1]
  else:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    data = tfds.as_numpy(tfds.load('fashion_mnist', split=split,
                                   batch_size=-1))
    images, labels = data['image'][..., 0], data['label']
  return images.astype(np.float32) / 255.0, labels.astype(np.int32)


def loss_fn(model, images, labels):
  logits = model(images)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return loss.mean(), logits


@nnx.jit
def train_step(model, optimizer, images, labels):
  (loss, _), grads = nnx.value_and_grad(loss_fn, has_aux=True)(
      model, images, labels)
  optimizer.update(model, grads)  # GSM needs the params: nnx passes them
  return loss


@nnx.jit
def accuracy(model, images, labels):
  return jnp.mean(jnp.argmax(model(images), -1) == labels)


def train_epochs(model, optimizer, data, epochs, config, rng):
  images, labels = data
  steps = len(images) // config.batch_size
  for epoch in range(epochs):
    order = rng.permutation(len(images))[:steps * config.batch_size]
    entered = 0
    for batch in order.reshape(steps, config.batch_size):
      loss = train_step(model, optimizer, images[batch], labels[batch])
      mask = gsm_optax.find_mask_state(optimizer.opt_state)  # None if dense
      if mask is not None:
        entered += mask.num_entered[...]  # summed on the device, no sync
    stats = ''
    if mask is not None:  # churn, and what the final prune would remove
      params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
      check = gsm_optax.check_final_prune(params, config.ratio, warn=False)
      stats = (f', {int(mask.num_active[...]):,} active, '
               f'{int(entered) / steps:,.0f} entered a step, the prune would '
               f'remove {check.share:.1%} of the weights\' norm'
               f'{"" if check.ok else " (too much: see the end)"}')
    print(f'  epoch {epoch + 1}: loss {float(loss):.4f}{stats}')


def run(config: Config, train_data, test_data) -> dict:
  """Dense training, GSM at ``config.ratio``, the final prune; a summary."""
  model = MLP(nnx.Rngs(config.seed))
  rng = np.random.default_rng(config.seed)
  steps = config.gsm_epochs * (len(train_data[0]) // config.batch_size)

  print('dense training')
  dense = nnx.Optimizer(model, optax.sgd(config.learning_rate, 0.9),
                        wrt=nnx.Param)
  train_epochs(model, dense, train_data, config.dense_epochs, config, rng)
  dense_accuracy = float(accuracy(model, *test_data))

  schedule = optax.cosine_decay_schedule(config.learning_rate, steps)
  # A passive weight ends at about exp(-this) of its size; below ~10 the
  # final prune removes weights that still matter (docs: FAQ).
  decay = float(np.sum(schedule(np.arange(steps)))) * (
      config.weight_decay / (1 - config.momentum))
  print(f'GSM at {config.ratio:g}x: passive weights will shrink to about '
        f'exp(-{decay:.1f}) of their size')
  tx = gsm_optax.gsm(schedule, config.ratio, momentum=config.momentum,
                     weight_decay=config.weight_decay, nesterov=True,
                     score_decay=config.score_decay or None,
                     passive_decay=config.passive_decay_steps / steps or None,
                     track_churn=True)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  train_epochs(model, optimizer, train_data, config.gsm_epochs, config, rng)
  before = float(accuracy(model, *test_data))

  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))  # nested dicts
  graphdef = nnx.graphdef(model)
  check = gsm_optax.check_final_prune(  # warns if it would change predictions
      params, config.ratio, fn=lambda p, x: nnx.merge(graphdef, p)(x),
      inputs=test_data[0][:2000])
  pruned, _ = gsm_optax.prune(params, config.ratio)
  nnx.update(model, pruned)
  report = gsm_optax.sparsity_report(pruned)

  # Ship it: a compact file of CSR kernels, loaded back as sparse kernels
  # and run with sparse products; the outputs are the pruned model's.
  os.makedirs(config.out_dir, exist_ok=True)
  path = os.path.join(config.out_dir, 'pruned.npz')
  file_bytes = gsm_optax.save_sparse(path, pruned)
  sparse_params = gsm_optax.load_sparse(path, as_sparse=True, like=pruned)
  graphdef = nnx.graphdef(model)
  forward = jax.jit(gsm_optax.sparse_apply(
      lambda p, x: nnx.merge(graphdef, p)(x)))
  images = test_data[0][:256]
  sparse_logits = forward(sparse_params, images)
  np.testing.assert_allclose(sparse_logits, model(images), rtol=1e-4,
                             atol=1e-4)  # the same model, summed in another order
  return {'dense_accuracy': dense_accuracy, 'accuracy_before_prune': before,
          'pruned_accuracy': float(accuracy(model, *test_data)),
          'report': report, 'model': model, 'prune_check': check,
          'sparse_file': path,
          'sparse_file_bytes': file_bytes, 'sparse_logits': sparse_logits}
