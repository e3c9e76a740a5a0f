"""One process of a multi-process run of the paper's example (see
tests/test_multiprocess.py): ``python tests/multiprocess_worker.py
WORKDIR MODE PORT PROCESS_ID OUT_JSON``.

It initialises JAX's distributed runtime on a loopback coordinator, as
``python -m examples.paper.main --distributed`` does, trains the tiny
LeNet-300 config of the tests, and writes what the test checks: the indices
of every batch share this process loaded, and whether the compiled train
step holds an all-gather.
"""

import json
import sys

import jax
import numpy as np


def tiny_config(mode):
  from examples.paper.configs import lenet300_fmnist  # pylint: disable=import-outside-toplevel
  config = lenet300_fmnist.get_config()
  config.dataset = 'synthetic'
  config.synthetic_size = 64
  config.batch_size = 16  # 2 per device of the 8-device mesh: 4 steps
  config.eval_batch_size = 16
  config.dense.epochs = 1
  config.gsm.epochs = 3
  config.dense.warmup_epochs = config.gsm.warmup_epochs = 0
  config.ratio = 20.0
  config.sharding = mode
  return config


def main():
  workdir, mode, port, process_id, out = sys.argv[1:6]
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}',
                             num_processes=2, process_id=int(process_id))
  # pylint: disable=import-outside-toplevel
  from examples.paper import data as data_lib
  from examples.paper import train

  shares, steps = [], []
  gather = data_lib._gather  # pylint: disable=protected-access

  def recording_gather(images, labels, indices):  # the train batches' loads
    shares.append([int(i) for i in np.asarray(indices)])
    return gather(images, labels, indices)

  data_lib._gather = recording_gather  # pylint: disable=protected-access
  make_train_step = train.make_train_step

  def recording_make_train_step(*args, **kwargs):
    step = make_train_step(*args, **kwargs)

    def recorded(*step_args):
      steps.append((step, jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                         sharding=getattr(x, 'sharding', None)),
          step_args)))
      return step(*step_args)

    return recorded

  train.make_train_step = recording_make_train_step
  report = train.train_and_evaluate(tiny_config(mode), workdir)
  step, abstract_args = steps[-1]  # the last phase's step (GSM)
  hlo = step.lower(*abstract_args).compile().as_text()
  with open(out, 'w') as f:
    json.dump({'process_index': jax.process_index(),
               'process_count': jax.process_count(),
               'device_count': jax.device_count(),
               'local_device_count': jax.local_device_count(),
               'train_shares': shares,
               'all_gather': 'all-gather' in hlo,
               'all_reduce': 'all-reduce' in hlo,
               'pruned_accuracy': report['pruned_accuracy']}, f)


if __name__ == '__main__':
  main()
