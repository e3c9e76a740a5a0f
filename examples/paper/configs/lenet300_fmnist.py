"""LeNet-300-100 on Fashion-MNIST: dense training, then GSM at 60x.

The paper's LeNet settings (official scripts): beta 0.99 Nesterov, lr 1e-2
with step decay, weight decay 5e-4, batch 256, from a trained dense model.
This demo shortens the schedule to run in minutes on a laptop CPU.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.model = 'lenet300'
  c.dataset = 'fashion_mnist'
  c.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.normalize = (0.2860, 0.3530)  # Fashion-MNIST mean / std
  c.augment = False
  c.num_classes = 10
  c.image_shape = (28, 28, 1)
  c.synthetic_size = 512
  # 'xavier_uniform': draw the kernels as the official scripts do; 'default':
  # each Flax layer's own initializer.
  c.kernel_init = 'default'
  # >0: train on the first (1 - f) of the training set and report accuracy on
  # its last f (a validation split, for tuning) instead of the test set.
  c.holdout_fraction = 0.0
  c.seed = 0
  c.batch_size = 256
  c.eval_batch_size = 1000
  c.ratio = 60.0
  c.method = 'interpolate'  # GSM's selection route
  # 'gsm', or a baseline with the same budget: 'magnitude_ft' (one-shot
  # global magnitude prune of the dense model + fine-tuning with the mask
  # fixed) or 'gradual_magnitude' (Zhu & Gupta's cubic schedule).
  c.pruning = 'gsm'
  # What GSM ranks: 'weights' (the paper), or 'channels': structured GSM,
  # whole neurons, channels and heads (gsm_optax.find_groups), to a budget
  # of 'params' or 'flops', ranked by 'group_taylor' |sum g*w| or
  # 'weight_taylor' sum |g*w|; the pruned model is then also slimmed.
  c.structure = 'weights'
  c.budget = 'params'
  c.group_score = 'group_taylor'
  # magnitude_ft's one-shot prune with structure='channels' ranks the groups
  # by 'l2' (sum of w**2) or 'l1' (sum of |w|, Li et al. 2017's filter norm).
  c.group_norm = 'l2'
  c.dense_from = ''  # workdir of a run whose dense model to start from
  c.gradual = ml_collections.ConfigDict()
  c.gradual.end_fraction = 0.75  # reach the final sparsity at 3/4 of training
  c.gradual.update_every = 50
  c.gradual.global_ranking = True
  # With structure='channels': rank the groups by 'magnitude' or by a
  # Taylor score of the update ('group_taylor', 'weight_taylor').
  c.gradual.score = 'magnitude'

  c.dense = ml_collections.ConfigDict()
  c.dense.epochs = 20
  c.dense.learning_rate = 3e-2
  c.dense.momentum = 0.9
  c.dense.weight_decay = 5e-4
  c.dense.nesterov = False
  c.dense.warmup_epochs = 1
  c.dense.decay_epochs = (12, 17)

  c.gsm = ml_collections.ConfigDict()
  c.gsm.epochs = 60
  c.gsm.learning_rate = 3e-2
  c.gsm.momentum = 0.99
  c.gsm.weight_decay = 5e-4
  c.gsm.nesterov = True
  c.gsm.warmup_epochs = 1
  c.gsm.decay_epochs = (40, 52)
  c.gsm.ratio_warmup_epochs = 0  # >0: keep 1 -> 1/C on a cubic schedule
  # Beyond the paper (gsm_optax.keep_top_taylor): log how many weights enter
  # the active set (one bool per weight of state), and optionally rank an
  # exponential average of the gradient, |m * w|, with this decay (None or
  # 0: the paper's |g * w|; demo.sh passes the recipe's 0.9).
  c.gsm.track_churn = True
  c.gsm.score_decay = ml_collections.FieldReference(None, field_type=float)
  # Also beyond the paper: shrink every passive weight by this share a step,
  # whatever the learning rate (gsm_optax.global_sparse); and, for the final
  # prune study, freeze the ranking from this epoch on (0: never), counted
  # like decay_epochs from the end of the warm-up.
  c.gsm.passive_decay = ml_collections.FieldReference(None, field_type=float)
  c.gsm.freeze_ranking_epoch = 0
  # The passive decay from this epoch of the phase on (0: from the start),
  # counted from the phase's first step, as ratio_warmup_epochs is.
  c.gsm.passive_decay_epoch = 0

  # Placement over devices (examples/paper/sharding.py): 'none', 'data' or 'fsdp'.
  c.sharding = 'none'
  c.mesh_shape = (-1,)
  c.mesh_axes = ('data',)

  c.lottery = False  # also retrain GSM and magnitude tickets from init
  # Save the pruned model (sparse file, orbax snapshot, slim model) and time
  # its forward pass against the dense one's.
  c.export = True
  c.checkpoint_every_epochs = 1
  # >0: also every this many steps inside an epoch, with the data iterator's
  # state, so a killed run resumes at the next batch (examples/paper/checkpoints.py).
  c.checkpoint_every_steps = 0
  return c
