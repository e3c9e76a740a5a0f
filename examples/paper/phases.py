"""The phases of an experiment: dense, pruning (GSM or a baseline), tickets.

Each phase is a name, an epoch count and the optimizer to train it with;
`train.train_and_evaluate` runs them in order from one code path.
"""

import dataclasses
import functools
from typing import Callable, Optional

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import optax

from examples.paper import models
import gsm_optax


@dataclasses.dataclass(frozen=True)
class Phase:
  """One stage of training.

  ``make_tx`` builds the optimizer when the phase runs (a ticket's mask comes
  from earlier phases); ``start_from``, if given, resets the model when the
  phase starts (a ticket rewinds to the initial weights).
  """
  name: str
  epochs: int
  make_tx: Callable[[], optax.GradientTransformation]
  start_from: Optional[Callable[[nnx.Module], None]] = None


def learning_rate_schedule(phase_config, steps_per_epoch, peak=None):
  """Linear warm-up to ``peak`` (default ``phase_config.learning_rate``),
  then x0.1 at each of ``decay_epochs`` (as the paper), counted from the end
  of the warm-up (`optax.join_schedules` restarts the step count there)."""
  peak = phase_config.learning_rate if peak is None else peak
  warmup = phase_config.warmup_epochs * steps_per_epoch
  boundaries = {int(e * steps_per_epoch): 0.1 for e in phase_config.decay_epochs}
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, max(warmup, 1)),
       optax.piecewise_constant_schedule(peak, boundaries)], [max(warmup, 1)])


def peak_in_state(make_tx, phase_config):
  """``make_tx(peak)`` at ``phase_config.learning_rate``, with the peak held
  in the optimizer state (`optax.inject_hyperparams`) rather than compiled
  into the train step as a constant: runs that differ only in their peak
  learning rate (a sweep) share one compiled step. The updates are those of
  ``make_tx(phase_config.learning_rate)``, bit for bit
  (tests/test_phases.py)."""
  return optax.inject_hyperparams(make_tx)(peak=phase_config.learning_rate)


def sgd_with_decay(phase_config, steps_per_epoch):
  """`momentum_sgd` with its peak held in the optimizer state (`peak_in_state`)."""
  return peak_in_state(
      functools.partial(momentum_sgd, phase_config, steps_per_epoch),
      phase_config)


def momentum_sgd(phase_config, steps_per_epoch, peak=None):
  """Momentum SGD (peak lr ``peak``, default the config's) with weight decay
  on the kernels: the paper's base run."""
  return optax.chain(
      optax.add_decayed_weights(phase_config.weight_decay,
                                mask=gsm_optax.default_prunable),
      optax.sgd(learning_rate_schedule(phase_config, steps_per_epoch, peak),
                phase_config.momentum, phase_config.nesterov))


def pruning_phase(config, steps_per_epoch, snapshots):
  """The phase that prunes: GSM, or a baseline with the same budget.

  Every method gets the same epochs and learning-rate schedule
  (``config.gsm``) and starts from the same dense model.
  """
  g = config.gsm
  if config.pruning == 'gsm':
    return Phase('gsm', g.epochs, lambda: peak_in_state(functools.partial(
        gsm_with_ratio_warmup, config, steps_per_epoch), g))
  if config.pruning == 'magnitude_ft':  # Han et al. 2015: prune, fine-tune
    mask = snapshot_mask(snapshots, 'dense', config)
    return Phase('magnitude_ft', g.epochs, lambda: optax.chain(
        gsm_optax.fixed_mask(mask()), sgd_with_decay(g, steps_per_epoch)),
                 start_from=lambda model: apply_mask(model, mask()))
  if config.pruning == 'gradual_magnitude':  # Zhu & Gupta 2017
    total = g.epochs * steps_per_epoch
    structure = prune_structure(config)  # with groups: channels removed
    if structure:
      structure['score'] = config.gradual.score
    return Phase('gradual_magnitude', g.epochs, lambda: optax.chain(
        sgd_with_decay(g, steps_per_epoch),
        gsm_optax.gradual_magnitude_pruning(
            config.ratio, begin_step=0,
            end_step=int(config.gradual.end_fraction * total),
            update_every=config.gradual.update_every,
            global_ranking=config.gradual.global_ranking, **structure)))
  raise ValueError("config.pruning must be 'gsm', 'magnitude_ft' or "
                   f"'gradual_magnitude'; got {config.pruning!r}.")


def gsm_with_ratio_warmup(config, steps_per_epoch, peak=None):
  """GSM (peak lr ``peak``, default the config's); with
  ``gsm.ratio_warmup_epochs``, the kept fraction goes from 1 to 1/C on Zhu &
  Gupta's cubic schedule (through inject_hyperparams)."""
  g = config.gsm
  lr = learning_rate_schedule(g, steps_per_epoch, peak)
  options = dict(gsm_options(g, steps_per_epoch), **structure_options(config))
  if not g.ratio_warmup_epochs:
    return gsm_optax.gsm(lr, config.ratio, momentum=g.momentum,
                         weight_decay=g.weight_decay, nesterov=g.nesterov,
                         method=config.method, **options)
  warmup = g.ratio_warmup_epochs * steps_per_epoch
  # 1 / (kept fraction) in float32 can end just above C: end on C itself.
  ratio = lambda step: jnp.where(
      step >= warmup, config.ratio,
      1.0 / gsm_optax.cubic_keep_fraction(step, config.ratio, 0, warmup))
  return optax.inject_hyperparams(
      gsm_optax.gsm, static_args=('nesterov', 'method', 'track_churn',
                                  'groups', 'budget', 'score'))(
          learning_rate=lr, ratio=ratio, momentum=g.momentum,
          weight_decay=g.weight_decay, nesterov=g.nesterov,
          method=config.method, **options)


def gsm_options(g, steps_per_epoch=None):
  """The options beyond the paper that the config turns on: churn logging
  (``gsm.track_churn``), a smoothed ranking (``gsm.score_decay``), a decay
  of the passive weights of their own (``gsm.passive_decay``), and a
  ranking frozen from an epoch on (``gsm.freeze_ranking_epoch``: from then
  the score is ``|m * w|`` with ``m`` the gradient average at that step,
  a score decay of 1). The passive decay starts at epoch
  ``gsm.passive_decay_epoch`` of the phase (0: at once)."""
  options = {'track_churn': g.get('track_churn', False)}
  decay = g.get('score_decay') or None  # 0: the paper's rule, as None
  freeze = g.get('freeze_ranking_epoch', 0)
  if freeze:
    freeze_step = freeze * steps_per_epoch + int(g.warmup_epochs *
                                                 steps_per_epoch)
    base = 0.0 if decay is None else decay
    decay = lambda count: jnp.where(count < freeze_step, base, 1.0)
  if decay is not None:
    options['score_decay'] = decay
  if g.get('passive_decay') is not None:
    options['passive_decay'] = g.passive_decay
    if g.get('passive_decay_epoch', 0):
      start, rho = g.passive_decay_epoch * steps_per_epoch, g.passive_decay
      options['passive_decay'] = lambda count: jnp.where(count < start, 0.0,
                                                         rho)
  return options


def structure_options(config):
  """With ``config.structure='channels'``: structured GSM's groups (found
  from the model's code), its budget and its group score; else nothing."""
  if config.get('structure', 'weights') == 'weights':
    return {}
  if config.structure != 'channels':
    raise ValueError("config.structure must be 'weights' or 'channels'; "
                     f'got {config.structure!r}.')
  return {'groups': groups_for(config), 'budget': config.budget,
          'score': config.group_score}


def prune_structure(config):
  """The arguments that make `gsm_optax.prune` (and the diagnostics and
  baselines) prune what the config's GSM ranks: whole groups
  (``structure='channels'``) or single weights."""
  groups = groups_for(config)
  if groups is None:
    return {}
  return {'groups': groups, 'budget': config.budget}


def groups_for(config):
  """The groups of the config's model, or None for per-weight pruning."""
  if config.get('structure', 'weights') == 'weights':
    return None
  return _groups(config.model, config.num_classes,
                 tuple(config.image_shape))


@functools.cache
def _groups(name, num_classes, image_shape):
  """Found on the model's eval-mode forward pass, one example: the
  structure does not depend on the weights, so an abstract model will do
  (no initializer runs)."""
  abstract = nnx.eval_shape(lambda: models.create_model(name, num_classes, 0))
  abstract.eval()
  graphdef, state = nnx.split(abstract)
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                        nnx.to_pure_dict(state))
  return gsm_optax.find_groups(lambda p, x: nnx.merge(graphdef, p)(x), params,
                               jnp.zeros((1,) + image_shape))


def make_phases(config, steps_per_epoch, snapshots):
  """dense -> pruning, then (lottery mode) the pruned and magnitude tickets."""
  d = config.dense
  phases = [
      Phase('dense', 0 if config.dense_from else d.epochs,
            lambda: sgd_with_decay(d, steps_per_epoch)),
      pruning_phase(config, steps_per_epoch, snapshots),
  ]
  if not config.lottery:
    return phases
  # Table 4: mask by global magnitude of the trained dense weights, or of the
  # GSM-trained weights; apply it to the initial weights; retrain with the
  # base schedule and the loss gradient masked.
  for name, source in (('ticket_' + config.pruning, config.pruning),
                       ('ticket_magnitude', 'dense')):
    ticket_mask = snapshot_mask(snapshots, source, config)
    phases.append(Phase(
        name, d.epochs,
        make_tx=lambda m=ticket_mask: optax.chain(
            gsm_optax.fixed_mask(m()), sgd_with_decay(d, steps_per_epoch)),
        start_from=lambda model, m=ticket_mask: rewind(model, m(), config)))
  return phases


def snapshot_mask(snapshots, name, config):
  """A cached loader of the global magnitude mask (at ``config.ratio``; of
  whole groups with ``config.structure='channels'``, ranked by their
  ``config.group_norm``) of the model saved at
  the end of phase ``name``; loaded when first needed."""
  @functools.cache
  def mask():
    params = nnx.state(snapshots.load(name, config), nnx.Param)
    return gsm_optax.prune(params, config.ratio, method=config.method,
                           group_norm=config.group_norm,
                           **prune_structure(config))[1]
  return mask


def apply_mask(model, masks):
  """Zeroes the parameters of ``model`` where ``masks`` is False."""
  params = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map(
      lambda p, m: jnp.where(m, p, jnp.zeros((), p.dtype)), params, masks))


def rewind(model, masks, config):
  """Resets ``model`` to its initial weights with ``masks`` applied."""
  nnx.update(model, nnx.state(
      models.from_config(config)))
  apply_mask(model, masks)
