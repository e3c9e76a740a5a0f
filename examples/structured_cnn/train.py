"""Structured GSM on a Flax NNX CNN: whole channels to a FLOPs budget, then
a smaller dense model, exported.

A small example to fork. It trains a CNN (conv-BN-ReLU-pool twice, two dense
layers) on Fashion-MNIST (or any ``(images, labels)`` arrays), finds the
groups of coupled channels from the model's code (`gsm_optax.find_groups`),
trains with structured GSM so that only the best channels per unit of FLOPs
get the gradient while the others glide to zero, cuts the passive channels
out (`gsm_optax.slim`), checks that the slim model computes what the pruned
one does, exports it with `jax.export` (it then runs without this code) and
times it against the dense model. Replace `CNN` with your own
``nnx.Module``: nothing else depends on it.
"""

import dataclasses
import os

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples.paper import timing
import gsm_optax


@dataclasses.dataclass
class Config:
  flops_ratio: float = 4.0  # the slim model does 1/4 of the FLOPs
  batch_size: int = 128
  dense_epochs: int = 2
  gsm_epochs: int = 6
  learning_rate: float = 3e-2
  momentum: float = 0.9
  weight_decay: float = 1e-3
  score_decay: float = 0.9  # a smoothed ranking: the passive set is stable
  passive_decay: float = 2e-3  # passive channels shrink 0.2% a step anyway
  seed: int = 0
  out_dir: str = 'runs/structured_cnn'


class CNN(nnx.Module):
  """conv32-BN-ReLU-pool, conv64-BN-ReLU-pool, dense 128, dense 10."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(1, 32, (3, 3), use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(32, rngs=rngs)
    self.conv2 = nnx.Conv(32, 64, (3, 3), use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(64, rngs=rngs)
    self.fc1 = nnx.Linear(7 * 7 * 64, 128, rngs=rngs)
    self.fc2 = nnx.Linear(128, 10, rngs=rngs)

  def __call__(self, x):
    x = nnx.max_pool(nnx.relu(self.bn1(self.conv1(x))), (2, 2), (2, 2))
    x = nnx.max_pool(nnx.relu(self.bn2(self.conv2(x))), (2, 2), (2, 2))
    return self.fc2(nnx.relu(self.fc1(x.reshape(x.shape[0], -1))))


def loss_fn(model, images, labels):
  logits = model(images)
  return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                         labels).mean()


@nnx.jit
def train_step(model, optimizer, images, labels):
  loss, grads = nnx.value_and_grad(loss_fn)(model, images, labels)
  optimizer.update(model, grads)  # GSM needs the params: nnx passes them
  return loss


@nnx.jit
def accuracy(model, images, labels):
  return jnp.mean(jnp.argmax(model(images), -1) == labels)


def evaluate(model, data, batch=1000):
  model.eval()
  images, labels = data
  hits = sum(float(accuracy(model, images[i:i + batch], labels[i:i + batch]))
             * len(images[i:i + batch]) for i in range(0, len(images), batch))
  model.train()
  return hits / len(images)


def train_epochs(model, optimizer, data, epochs, config, rng):
  images, labels = data
  steps = len(images) // config.batch_size
  for epoch in range(epochs):
    order = rng.permutation(len(images))[:steps * config.batch_size]
    for batch in order.reshape(steps, config.batch_size):
      loss = train_step(model, optimizer, images[batch], labels[batch])
    mask = gsm_optax.find_mask_state(optimizer.opt_state)
    stats = '' if mask is None else f', {int(mask.num_active[...])} channels active'
    print(f'  epoch {epoch + 1}: loss {float(loss):.4f}{stats}')


def run(config: Config, train_data, test_data) -> dict:
  """Dense training, structured GSM, the prune, the slim model, the export."""
  train_data = (train_data[0][..., None], train_data[1])  # NHWC
  test_data = (test_data[0][..., None], test_data[1])
  model = CNN(nnx.Rngs(config.seed))
  rng = np.random.default_rng(config.seed)

  print('dense training')
  dense = nnx.Optimizer(model, optax.sgd(config.learning_rate, 0.9),
                        wrt=nnx.Param)
  train_epochs(model, dense, train_data, config.dense_epochs, config, rng)
  dense_accuracy = evaluate(model, test_data)

  # The groups, from the model's code: the whole state (batch statistics
  # too) and the eval-mode forward pass, on one example.
  model.eval()
  graphdef, state = nnx.split(model)
  forward = lambda p, x: nnx.merge(graphdef, p)(x)
  groups = gsm_optax.find_groups(forward, nnx.to_pure_dict(state),
                                 test_data[0][:1])
  model.train()
  print(f'{groups}: ' + ', '.join(f'{f.name} ({f.size})'
                                  for f in groups.families))

  steps = config.gsm_epochs * (len(train_data[0]) // config.batch_size)
  tx = gsm_optax.gsm(optax.cosine_decay_schedule(config.learning_rate, steps),
                     config.flops_ratio, momentum=config.momentum,
                     weight_decay=config.weight_decay, nesterov=True,
                     groups=groups, budget='flops',
                     score_decay=config.score_decay,
                     passive_decay=config.passive_decay)
  print(f'structured GSM to 1/{config.flops_ratio:g} of the FLOPs')
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  train_epochs(model, optimizer, train_data, config.gsm_epochs, config, rng)
  before = evaluate(model, test_data)

  # Prune the trained params by groups, then cut the passive ones out.
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  check = gsm_optax.check_final_prune(params, config.flops_ratio,
                                      groups=groups, budget='flops')
  pruned, _ = gsm_optax.prune(params, config.flops_ratio, groups=groups,
                              budget='flops')
  nnx.update(model, pruned)
  pruned_accuracy = evaluate(model, test_data)
  model.eval()
  state = nnx.to_pure_dict(nnx.state(model))
  slim_state, slim_fn, info = gsm_optax.slim(forward, state, groups)
  report = gsm_optax.structure_report(state, groups)
  images = test_data[0][:256]
  np.testing.assert_allclose(slim_fn(slim_state, images), model(images),
                             rtol=1e-4, atol=1e-4)  # the same model, smaller

  # Export: the weights inside, any batch size, no model code needed.
  os.makedirs(config.out_dir, exist_ok=True)
  path = os.path.join(config.out_dir, 'slim_cnn.bin')
  with open(path, 'wb') as f:
    f.write(gsm_optax.export_slim(slim_fn, slim_state, images))
  exported = jax.export.deserialize(open(path, 'rb').read())
  np.testing.assert_allclose(exported.call(images), model(images), rtol=1e-4,
                             atol=1e-4)
  dense_fn, small_fn = jax.jit(forward), jax.jit(slim_fn)
  seconds = timing.median_seconds({
      'dense': lambda: dense_fn(state, images),
      'slim': lambda: small_fn(slim_state, images),
      'exported': lambda: exported.call(images)}, repeats=30)
  ms = {k: 1e3 * v for k, v in seconds.items()}
  return {'dense_accuracy': dense_accuracy, 'accuracy_before_prune': before,
          'pruned_accuracy': pruned_accuracy, 'prune_check': check,
          'report': report, 'info': info, 'artefact': path,
          'artefact_bytes': os.path.getsize(path), 'milliseconds': ms,
          'slim_state': slim_state, 'slim_fn': slim_fn, 'model': model,
          'groups': groups}
