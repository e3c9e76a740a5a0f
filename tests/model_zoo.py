"""The example models with random weights, built without running their
initializers (each conv's initializer compiles once per shape: DenseNet-40
took minutes); the tests of the structure do not depend on the weights'
distribution."""

import functools

import flax.nnx as nnx
import jax
import numpy as np

from examples.paper import models

MAKERS = {
    'lenet300': lambda: models.create_model('lenet300', 10, 0),
    'lenet5': lambda: models.create_model('lenet5', 10, 0),
    'resnet56': lambda: models.create_model('resnet56', 10, 0),
    'resnet50': lambda: models.create_model('resnet50', 1000, 0),
    'densenet40': lambda: models.create_model('densenet40', 10, 0),
    # DenseNet-40's blocks, transitions and concatenations, two layers a
    # block (`SMALL`): what the slim model's test needs, in a fifth the time.
    'densenet_small': lambda: SMALL['densenet40'](10, nnx.Rngs(0)),
    'transformer': lambda: models.TinyTransformer(rngs=nnx.Rngs(0)),
}


def random_module(make, seed=0):
  """``make()``'s module, built abstractly and filled with random weights
  (positive batch-norm variances) instead of running its initializers."""
  abstract = nnx.eval_shape(make)
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if not hasattr(leaf, 'shape') or not np.issubdtype(leaf.dtype,
                                                      np.floating):
      return leaf
    x = 0.1 * rng.normal(size=leaf.shape)
    if jax.tree_util.keystr(path).endswith("['var']"):
      x = 1.0 + np.abs(x)
    return x.astype(leaf.dtype)

  params = jax.tree_util.tree_map_with_path(fill, nnx.to_pure_dict(state))
  return nnx.merge(graphdef, params)


def fast_create_model(name, num_classes, seed, kernel_init='default'):
  """`examples.paper.models.create_model` with random weights (see
  `random_module`): for tests of a training loop, not of an initializer."""
  del kernel_init
  return random_module(lambda: models.MODELS[name](num_classes,
                                                   rngs=nnx.Rngs(seed)), seed)


@functools.cache
def model(name):
  """``(graphdef, state)`` of the model in eval mode, with random weights
  (see `random_module`)."""
  module = random_module(MAKERS[name])
  module.eval()
  graphdef, state = nnx.split(module)
  return graphdef, nnx.to_pure_dict(state)


# The conv nets' architectures with fewer blocks: one block a stage (ResNets,
# narrower), two layers a dense block (DenseNet). Every kind of block, stage
# transition, shortcut and norm is still there, so a training loop's code
# paths run, compiled in seconds rather than minutes.
SMALL = {
    'resnet56': lambda classes, rngs: models.ResNet(
        [(16, 1), (32, 1), (64, 1)], models.BasicBlock, (16, 3, 1, False),
        classes, rngs=rngs),
    'densenet40': lambda classes, rngs: models.DenseNet(2, 12, classes,
                                                        rngs=rngs),
    'resnet50': lambda classes, rngs: models.ResNet(
        [(8, 1), (16, 1), (32, 1), (64, 1)], models.Bottleneck,
        (8, 7, 2, True), classes, rngs=rngs),
}


def small_create_model(name, num_classes, seed, kernel_init='default'):
  """`fast_create_model` of the architecture's smaller form (`SMALL`), for
  tests of a training loop over a config, not of the model's size."""
  del kernel_init
  if name not in SMALL:
    return fast_create_model(name, num_classes, seed)
  return random_module(lambda: SMALL[name](num_classes, nnx.Rngs(seed)),
                       seed)
