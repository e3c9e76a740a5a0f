"""Runs one experiment: python -m examples.paper.main --config CONFIG --workdir DIR.

Any config field can be overridden, e.g. ``--config.ratio=125``.
"""

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from examples.paper import train

_WORKDIR = flags.DEFINE_string('workdir', None, 'Checkpoints, metrics, report.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Call jax.distributed.initialize() first (multi-'
    'host TPU pod slices and GPU clusters).')
config_flags.DEFINE_config_file('config', None, 'Experiment configuration.',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  train.train_and_evaluate(flags.FLAGS.config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
