"""LeNet-300-100 with the paper's protocol: the official scripts' settings.

Dense base from scratch (Xavier-uniform kernels): 200 epochs, beta 0.9, lr
3e-2 x0.1 at epochs 40/80/120/160. Then GSM at 60x from the trained base:
280 epochs, beta 0.99 Nesterov, lr 1e-2 x0.1 at 160/200/240. Both: weight
decay 5e-4, batch 256, 5-epoch linear warm-up, no augmentation (see
../shared/PAPER.md, "Settings in the official scripts"). Nothing shortened.

The decay epochs below are counted from the end of the warm-up (as
`phases.learning_rate_schedule` counts them), so 35 is the official 40.

Fashion-MNIST by default (Debian's idx files here); the paper's MNIST with
``--config.dataset=mnist`` (TFDS, or ``--config.data_dir`` = a folder of
MNIST idx files), normalized as MNIST, (0.1307, 0.3081).
"""

import ml_collections

from examples.paper.configs import lenet300_fmnist


def get_config():
  c = lenet300_fmnist.get_config()
  c.normalize = ml_collections.FieldReference(None, field_type=tuple)
  c.kernel_init = 'xavier_uniform'
  c.ratio = 60.0
  c.dense.update(epochs=200, learning_rate=3e-2, momentum=0.9,
                 weight_decay=5e-4, nesterov=False, warmup_epochs=5,
                 decay_epochs=(35, 75, 115, 155))
  c.gsm.update(epochs=280, learning_rate=1e-2, momentum=0.99,
               weight_decay=5e-4, nesterov=True, warmup_epochs=5,
               decay_epochs=(155, 195, 235))
  c.checkpoint_every_epochs = 10
  return c
