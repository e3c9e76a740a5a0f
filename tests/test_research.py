"""The research folders' diagnostics: dead units, the divergence study's step and gradient shares."""

from benchmarks.accuracy import plan


def test_dead_units_counts_relu_units_that_never_fire():
  import numpy as np  # pylint: disable=import-outside-toplevel

  from examples.paper import models  # pylint: disable=import-outside-toplevel
  from examples.paper.configs import lenet5_fmnist  # pylint: disable=import-outside-toplevel
  from research.lenet5_divergence import dead_units  # pylint: disable=import-outside-toplevel
  config = lenet5_fmnist.get_config()
  model = models.create_model('lenet5', 10, seed=0)
  images = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1),
                                             dtype=np.uint8)
  bias = model.fc1.bias[...]
  model.fc1.bias[...] = bias + 1e3  # every unit fires on every image
  assert dead_units.dead_units(model, images, config) == 0
  model.fc1.bias[...] = (bias + 1e3).at[:7].set(-1e3)  # 7 never fire
  assert dead_units.dead_units(model, images, config) == 7


def test_divergence_step_counts_the_active_weights_per_kernel():
  import flax.nnx as nnx  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from examples.paper import models  # pylint: disable=import-outside-toplevel
  from examples.paper import phases  # pylint: disable=import-outside-toplevel
  from research.lenet5_divergence import divergence  # pylint: disable=import-outside-toplevel
  config = plan.make_config('lenet5', plan.FULL['lenet5'], 'gsm', 10.0, 0,
                           None, None, lottery=False)
  graphdef, params = nnx.split(models.create_model('lenet5', 10, 0))
  tx = phases.gsm_with_ratio_warmup(config, steps_per_epoch=4)
  opt_state = tx.init(params)
  step = divergence.make_step(graphdef, tx, config)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
  labels = rng.integers(0, 10, 8).astype(np.int32)
  for _ in range(2):
    params, opt_state, loss, active = step(params, opt_state, images, labels)
  assert np.isfinite(float(loss))
  # The per-kernel counts add up to the mask's own count (ties kept).
  assert sum(int(a) for a in active.values()) == int(opt_state[0].num_active)
  assert int(opt_state[0].num_active) >= 430_500 // 10
  stats = divergence.layer_stats(params, opt_state)
  assert set(stats) == set(divergence.KERNELS)
  assert all(s['rms_momentum'] > 0 for s in stats.values())


def test_divergence_unranked_kernels_take_the_full_gradient():
  import flax.nnx as nnx  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from examples.paper import models  # pylint: disable=import-outside-toplevel
  from research.lenet5_divergence import divergence  # pylint: disable=import-outside-toplevel
  config = plan.make_config('lenet5', plan.FULL['lenet5'], 'gsm', 10.0, 0,
                           None, None, lottery=False)
  config.gsm.weight_decay = 0.0  # so that only the gradient moves a weight
  _, params = nnx.split(models.create_model('lenet5', 10, 0))
  grads = jax.tree.map(jax.numpy.ones_like, params)
  moved = {}
  for unranked in ((), ('fc2',)):
    tx = divergence.make_tx(config, 4, unranked)
    state = tx.init(params)
    for _ in range(2):  # the first step's learning rate is 0 (warm-up)
      updates, state = tx.update(grads, state, params)
    moved[unranked] = np.count_nonzero(updates['fc2']['kernel'][...])
  assert 0 < moved[()] < 5000  # ranked: only fc2's active weights move
  assert moved[('fc2',)] == 5000  # unranked: every fc2 weight moves
  tx = divergence.make_tx(config, 4, freeze_biases=True)
  state = tx.init(params)
  for _ in range(2):
    updates, state = tx.update(grads, state, params)
  assert all(not np.any(updates[k]['bias'][...]) for k in divergence.KERNELS)
  assert np.any(updates['fc2']['kernel'][...])


def test_gradient_shares_through_the_two_masks():
  import numpy as np  # pylint: disable=import-outside-toplevel

  from research.lenet5_divergence import divergence  # pylint: disable=import-outside-toplevel
  grads = np.array([3.0, 1.0, 0.1, 2.0])
  weights = np.array([1.0, 5.0, 10.0, 0.1])
  # |g*w| = 3, 5, 1, 0.2 -> top 2: indices 1, 0 (g**2 = 1 + 9 of 14.01);
  # |w| top 2: indices 2, 1 (g**2 = 0.01 + 1).
  by_score, by_magnitude = divergence.gradient_shares(grads, weights, 2)
  assert np.isclose(by_score, 10 / 14.01)
  assert np.isclose(by_magnitude, 1.01 / 14.01)
