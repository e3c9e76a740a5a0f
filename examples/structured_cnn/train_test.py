"""The structured example prunes to the FLOPs budget, slims, exports."""

import jax
import numpy as np

from examples.mnist_nnx.train_test import teacher_data
from examples.structured_cnn import train


def test_run_slims_to_the_budget_and_exports(tmp_path):
  config = train.Config(flops_ratio=3.0, batch_size=64, dense_epochs=2,
                        gsm_epochs=3, out_dir=str(tmp_path))
  result = train.run(config, teacher_data(1024, 0), teacher_data(256, 1))
  info = result['info']
  assert info.flops[0] / info.flops[1] >= 3.0 * (1 - 1e-6)
  assert sum(np.size(x) for x in jax.tree.leaves(result['slim_state'])) == (
      info.params[1])
  kept = {name: n for name, _, n in info.channels}
  assert set(kept) == {"['conv1']", "['conv2']", "['fc1']"}
  assert all(n >= 1 for n in kept.values())
  assert result['artefact_bytes'] > 0 and result['dense_accuracy'] > 0.2
  assert result['report'].total_flops == info.flops
