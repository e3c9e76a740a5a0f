"""Parameter trees with the shapes of the paper's models (values random)."""

import numpy as np


def lenet300_shapes():
  """LeNet-300-100: 266,610 parameters."""
  return {'fc1': {'kernel': (784, 300), 'bias': (300,)},
          'fc2': {'kernel': (300, 100), 'bias': (100,)},
          'fc3': {'kernel': (100, 10), 'bias': (10,)}}


def _conv_bn(c_in, c_out, k):
  return {'kernel': (k, k, c_in, c_out), 'scale': (c_out,), 'bias': (c_out,)}


def resnet56_shapes():
  """ResNet-56 for CIFAR-10 with 1x1 projection shortcuts (~852K kernels)."""
  tree = {'stem': _conv_bn(3, 16, 3)}
  c_in = 16
  for stage, width in enumerate((16, 32, 64)):
    for block in range(9):
      b = {'conv1': _conv_bn(c_in, width, 3), 'conv2': _conv_bn(width, width, 3)}
      if c_in != width:
        b['proj'] = _conv_bn(c_in, width, 1)
      tree[f'stage{stage}_block{block}'] = b
      c_in = width
  tree['head'] = {'kernel': (64, 10), 'bias': (10,)}
  return tree


def resnet50_shapes():
  """ResNet-50 for ImageNet: 25.5M parameters."""
  tree = {'stem': _conv_bn(3, 64, 7)}
  c_in = 64
  for stage, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6),
                                           (512, 3))):
    for block in range(blocks):
      b = {'conv1': _conv_bn(c_in, width, 1), 'conv2': _conv_bn(width, width, 3),
           'conv3': _conv_bn(width, 4 * width, 1)}
      if block == 0:
        b['proj'] = _conv_bn(c_in, 4 * width, 1)
      tree[f'stage{stage}_block{block}'] = b
      c_in = 4 * width
  tree['head'] = {'kernel': (2048, 1000), 'bias': (1000,)}
  return tree


def random_tree(shapes, seed=0, dtype=np.float32):
  rng = np.random.default_rng(seed)
  def fill(s):
    return rng.standard_normal(s).astype(dtype)
  return _map_shapes(fill, shapes)


def _map_shapes(fn, shapes):
  if isinstance(shapes, dict):
    return {k: _map_shapes(fn, v) for k, v in shapes.items()}
  return fn(shapes)


TREES = {'lenet300 (0.27M)': lenet300_shapes,
         'resnet56 (0.85M)': resnet56_shapes,
         'resnet50 (25.5M)': resnet50_shapes}
