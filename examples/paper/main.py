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
    'host TPU pod slices, GPU clusters, several local processes).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'With --distributed: host:port of process '
    "0's coordinator (e.g. 127.0.0.1:12345); omit on TPU, Slurm or Open MPI, "
    'where JAX finds it.')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'With --distributed: how many processes.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'With --distributed: this process, 0 to '
    'num_processes - 1.')
config_flags.DEFINE_config_file('config', None, 'Experiment configuration.',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  if _DISTRIBUTED.value:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  train.train_and_evaluate(flags.FLAGS.config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
