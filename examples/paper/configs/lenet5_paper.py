"""LeNet-5 (Caffe variant) with the paper's protocol, GSM at 125x.

The official LeNet scripts' settings, the same as LeNet-300's
(`lenet300_paper`): dense 200 epochs, then GSM 280 epochs; the paper reports
125x and 300x (``--config.ratio=300``). Fashion-MNIST by default, MNIST with
``--config.dataset=mnist``.
"""

from examples.paper.configs import lenet300_paper


def get_config():
  c = lenet300_paper.get_config()
  c.model = 'lenet5'
  c.ratio = 125.0
  return c
