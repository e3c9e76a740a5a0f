"""DenseNet-40 (k=12) on CIFAR-10, GSM at 10x (paper: 93.86 -> 93.90)."""

from examples.paper.configs import resnet56_cifar10


def get_config():
  c = resnet56_cifar10.get_config()
  c.model = 'densenet40'
  return c
