"""The paper's models in flax.nnx, with the paper's parameter counts."""

import flax.nnx as nnx
import jax
import jax.numpy as jnp


class LeNet300(nnx.Module):
  """LeNet-300-100: 784-300-100-10 with ReLU (266,610 parameters)."""

  def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(784, 300, rngs=rngs)
    self.fc2 = nnx.Linear(300, 100, rngs=rngs)
    self.fc3 = nnx.Linear(100, num_classes, rngs=rngs)

  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    return self.fc3(nnx.relu(self.fc2(nnx.relu(self.fc1(x)))))


def max_pool_2x2(x):
  """2x2/2 max pooling as reshape + max: its gradient avoids XLA:CPU's slow
  select-and-scatter (a quarter faster LeNet-5 step; docs: performance)."""
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class LeNet5(nnx.Module):
  """Caffe LeNet-5: conv20-pool-conv50-pool-fc500-fc10, ReLU (431,080)."""

  def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(1, 20, (5, 5), padding='VALID', rngs=rngs)
    self.conv2 = nnx.Conv(20, 50, (5, 5), padding='VALID', rngs=rngs)
    self.fc1 = nnx.Linear(800, 500, rngs=rngs)
    self.fc2 = nnx.Linear(500, num_classes, rngs=rngs)

  def fc1_preactivation(self, x):
    """The input of the ReLU: (N, 500)."""
    x = max_pool_2x2(self.conv1(x))
    x = max_pool_2x2(self.conv2(x))
    return self.fc1(x.reshape(x.shape[0], -1))

  def __call__(self, x):
    return self.fc2(nnx.relu(self.fc1_preactivation(x)))


class ConvBN(nnx.Module):
  """Conv (no bias) followed by batch norm."""

  def __init__(self, c_in, c_out, kernel, stride=1, *, rngs):
    self.conv = nnx.Conv(c_in, c_out, (kernel, kernel), strides=stride,
                         padding=kernel // 2, use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(c_out, momentum=0.9, rngs=rngs)

  def __call__(self, x):
    return self.bn(self.conv(x))


class BasicBlock(nnx.Module):
  """ResNet basic block with a 1x1 conv + BN projection shortcut."""

  def __init__(self, c_in, c_out, stride, *, rngs):
    self.conv1 = ConvBN(c_in, c_out, 3, stride, rngs=rngs)
    self.conv2 = ConvBN(c_out, c_out, 3, rngs=rngs)
    self.proj = (ConvBN(c_in, c_out, 1, stride, rngs=rngs)
                 if stride != 1 or c_in != c_out else None)

  def __call__(self, x):
    y = self.conv2(nnx.relu(self.conv1(x)))
    return nnx.relu(y + (self.proj(x) if self.proj is not None else x))


class Bottleneck(nnx.Module):
  """ResNet-50 bottleneck block (1x1, 3x3, 1x1 x4)."""

  def __init__(self, c_in, width, stride, *, rngs):
    self.conv1 = ConvBN(c_in, width, 1, rngs=rngs)
    self.conv2 = ConvBN(width, width, 3, stride, rngs=rngs)
    self.conv3 = ConvBN(width, 4 * width, 1, rngs=rngs)
    self.proj = (ConvBN(c_in, 4 * width, 1, stride, rngs=rngs)
                 if stride != 1 or c_in != 4 * width else None)

  def __call__(self, x):
    y = self.conv3(nnx.relu(self.conv2(nnx.relu(self.conv1(x)))))
    return nnx.relu(y + (self.proj(x) if self.proj is not None else x))


class ResNet(nnx.Module):
  """CIFAR ResNet-(6n+2) (basic blocks) or ImageNet ResNet-50 (bottlenecks)."""

  def __init__(self, stages, block, stem, num_classes, *, rngs):
    stem_out, stem_kernel, stem_stride, self.stem_pool = stem
    self.stem = ConvBN(3, stem_out, stem_kernel, stem_stride, rngs=rngs)
    blocks, c_in = [], stem_out
    for i, (width, count) in enumerate(stages):
      for j in range(count):
        stride = 2 if (j == 0 and i > 0) else 1
        blocks.append(block(c_in, width, stride, rngs=rngs))
        c_in = width * (4 if block is Bottleneck else 1)
    self.blocks = nnx.List(blocks)
    self.head = nnx.Linear(c_in, num_classes, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.stem(x))
    if self.stem_pool:
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
    for b in self.blocks:
      x = b(x)
    return self.head(jnp.mean(x, axis=(1, 2)))


def resnet56(num_classes=10, *, rngs):
  return ResNet([(16, 9), (32, 9), (64, 9)], BasicBlock, (16, 3, 1, False),
                num_classes, rngs=rngs)


def resnet50(num_classes=1000, *, rngs):
  return ResNet([(64, 3), (128, 4), (256, 6), (512, 3)], Bottleneck,
                (64, 7, 2, True), num_classes, rngs=rngs)


class DenseLayer(nnx.Module):
  """BN-ReLU-Conv3x3 producing ``growth`` new channels, concatenated."""

  def __init__(self, c_in, growth, *, rngs):
    self.bn = nnx.BatchNorm(c_in, momentum=0.9, rngs=rngs)
    self.conv = nnx.Conv(c_in, growth, (3, 3), padding=1, use_bias=False,
                         rngs=rngs)

  def __call__(self, x):
    return jnp.concatenate([x, self.conv(nnx.relu(self.bn(x)))], axis=-1)


class Transition(nnx.Module):
  """BN-ReLU-Conv1x1-AvgPool between dense blocks."""

  def __init__(self, c, *, rngs):
    self.bn = nnx.BatchNorm(c, momentum=0.9, rngs=rngs)
    self.conv = nnx.Conv(c, c, (1, 1), use_bias=False, rngs=rngs)

  def __call__(self, x):
    x = self.conv(nnx.relu(self.bn(x)))
    return nnx.avg_pool(x, (2, 2), strides=(2, 2))


class DenseNet(nnx.Module):
  """DenseNet-(3L+4) for CIFAR (Huang et al. 2017), no bottleneck."""

  def __init__(self, layers_per_block=12, growth=12, num_classes=10, *, rngs):
    c = 16
    self.stem = nnx.Conv(3, c, (3, 3), padding=1, use_bias=False, rngs=rngs)
    modules = []
    for block in range(3):
      for _ in range(layers_per_block):
        modules.append(DenseLayer(c, growth, rngs=rngs))
        c += growth
      if block < 2:
        modules.append(Transition(c, rngs=rngs))
    self.body = nnx.List(modules)
    self.bn = nnx.BatchNorm(c, momentum=0.9, rngs=rngs)
    self.head = nnx.Linear(c, num_classes, rngs=rngs)

  def __call__(self, x):
    x = self.stem(x)
    for m in self.body:
      x = m(x)
    return self.head(jnp.mean(nnx.relu(self.bn(x)), axis=(1, 2)))


def densenet40(num_classes=10, *, rngs):
  return DenseNet(12, 12, num_classes, rngs=rngs)


class TransformerBlock(nnx.Module):
  """Pre-norm block: self-attention, then a GELU MLP, each residual."""

  def __init__(self, width, heads, mlp_width, *, rngs):
    self.attention_norm = nnx.LayerNorm(width, rngs=rngs)
    self.attention = nnx.MultiHeadAttention(heads, width, decode=False,
                                            rngs=rngs)
    self.mlp_norm = nnx.LayerNorm(width, rngs=rngs)
    self.mlp_in = nnx.Linear(width, mlp_width, rngs=rngs)
    self.mlp_out = nnx.Linear(mlp_width, width, rngs=rngs)

  def __call__(self, x):
    x = x + self.attention(self.attention_norm(x))
    return x + self.mlp_out(nnx.gelu(self.mlp_in(self.mlp_norm(x))))


class TinyTransformer(nnx.Module):
  """A small transformer over token sequences: token and position
  embeddings, pre-norm blocks, a final norm and a linear head at every
  position (for the transformer tests and the AdamW study)."""

  def __init__(self, vocab=16, length=16, width=64, heads=4, mlp_width=128,
               blocks=2, *, rngs):
    self.token_embedding = nnx.Embed(vocab, width, rngs=rngs)
    self.position_embedding = nnx.Param(
        0.02 * jax.random.normal(rngs.params(), (length, width)))
    self.blocks = nnx.List([TransformerBlock(width, heads, mlp_width,
                                             rngs=rngs)
                            for _ in range(blocks)])
    self.norm = nnx.LayerNorm(width, rngs=rngs)
    self.head = nnx.Linear(width, vocab, rngs=rngs)

  def __call__(self, tokens):
    x = self.token_embedding(tokens) + self.position_embedding[...]
    for block in self.blocks:
      x = block(x)
    return self.head(self.norm(x))


MODELS = {'lenet300': LeNet300, 'lenet5': LeNet5, 'resnet56': resnet56,
          'densenet40': densenet40, 'resnet50': resnet50}


KERNEL_INITS = {'default': None,  # each layer's own (Flax: LeCun normal)
                'xavier_uniform': nnx.initializers.xavier_uniform()}


def create_model(name: str, num_classes: int, seed: int,
                 kernel_init: str = 'default') -> nnx.Module:
  """The model ``name``; ``kernel_init='xavier_uniform'`` draws every
  kernel again as the official scripts initialise them."""
  if name not in MODELS:
    raise ValueError(f'config.model must be one of {sorted(MODELS)}; '
                     f'got {name!r}.')
  if kernel_init not in KERNEL_INITS:
    raise ValueError(f'config.kernel_init must be one of '
                     f'{sorted(KERNEL_INITS)}; got {kernel_init!r}.')
  model = MODELS[name](num_classes, rngs=nnx.Rngs(seed))
  init = KERNEL_INITS[kernel_init]
  if init is not None:
    key = jax.random.key(seed)
    for i, (path, param) in enumerate(nnx.iter_graph(model)):
      if isinstance(param, nnx.Param) and path[-1] == 'kernel':
        param[...] = init(jax.random.fold_in(key, i), param.shape,
                          param.dtype)
  return model


def from_config(config) -> nnx.Module:
  """The model a config describes, at its initial weights."""
  return create_model(config.model, config.num_classes, config.seed,
                      config.get('kernel_init', 'default'))


def count_params(model: nnx.Module) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
