"""ResNet-50 on ImageNet (TFDS imagenet2012), GSM at 5x (paper: 75.72 -> 74.30).

Needs the TFDS imagenet2012 data prepared on the host (manual download). The
images are streamed from ``tfds.data_source`` through Grain, with a
random-resized crop and flip decoded in ``grain_workers`` processes
(`examples.paper.grain_pipeline`).
"""

from examples.paper.configs import lenet300_fmnist


def get_config():
  c = lenet300_fmnist.get_config()
  c.model = 'resnet50'
  c.dataset = 'imagenet2012'
  c.normalize = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
  c.augment = False  # augmentation happens in the Grain pipeline
  c.grain_workers = 8  # decoding processes per host (0: in the main process)
  c.num_classes = 1000
  c.image_shape = (224, 224, 3)
  c.batch_size = 256
  c.checkpoint_every_steps = 1000  # an epoch is 5,004 steps
  c.ratio = 5.0
  c.dense.update(epochs=90, learning_rate=0.1, momentum=0.9,
                 weight_decay=1e-4, nesterov=False, warmup_epochs=5,
                 decay_epochs=(30, 60, 80))
  c.gsm.update(epochs=60, learning_rate=5e-3, momentum=0.98,
               weight_decay=1e-4, nesterov=False, warmup_epochs=1,
               decay_epochs=(40, 50))
  return c
