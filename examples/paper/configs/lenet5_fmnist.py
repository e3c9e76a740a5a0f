"""LeNet-5 (Caffe variant) on Fashion-MNIST, GSM at 125x (paper: MNIST)."""

from examples.paper.configs import lenet300_fmnist


def get_config():
  c = lenet300_fmnist.get_config()
  c.model = 'lenet5'
  c.ratio = 125.0
  return c
