"""ResNet-56 on CIFAR-10, GSM at 10x (paper Table 2: 94.05 -> 93.80).

Official scripts: base 500 epochs, beta 0.9, lr 0.1 decayed x0.1 at
100/200/300/400; GSM 600 epochs, beta 0.98, lr 5e-3 decayed at 400/500;
weight decay 1e-4, batch 64, 5 warm-up epochs; pad-4 crop + flip.
"""

from examples.paper.configs import lenet300_fmnist


def get_config():
  c = lenet300_fmnist.get_config()
  c.model = 'resnet56'
  c.dataset = 'cifar10'
  c.normalize = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
  c.augment = True
  c.image_shape = (32, 32, 3)
  c.batch_size = 64
  c.ratio = 10.0
  c.dense.update(epochs=500, learning_rate=0.1, momentum=0.9,
                 weight_decay=1e-4, nesterov=False, warmup_epochs=5,
                 decay_epochs=(100, 200, 300, 400))
  c.gsm.update(epochs=600, learning_rate=5e-3, momentum=0.98,
               weight_decay=1e-4, nesterov=False, warmup_epochs=5,
               decay_epochs=(400, 500))
  return c
