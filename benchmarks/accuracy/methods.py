"""The pruning methods of the accuracy benchmark, one record each.

A method is data: its name, its label in the tables and figures, how its
config differs from the model's, its learning-rate sweeps on validation, a
hyperparameter chosen on validation before them (if any), and what
RESULTS.md says of it. The plan, the run loop, the tables, the figures and
the notebook read `METHODS`; adding a method is adding a record here.
Long because it is that one list of records, each with its sweeps and its
fairness line, kept in one place so that the comparison reads as one table.

Learning-rate sweeps, and why they are what they are: each method's
pruning-phase peak lr (momentum 0.99 Nesterov, so the effective step is
lr / (1 - 0.99)) is swept on a validation split, the last 1/6 of the
training set, never the test set; with the plan's budget for that model and
its own dense model. The comparison then trains each method at a swept
ratio with its best lr there, and at every other ratio with the config's lr
(3e-2: the best of every method in the first sweeps, at 60x and 125x over
1e-2, 3e-2 and 1e-1). LeNet-300 (about 1.5 min a run on one core) is swept
at every ratio over 1e-2 to 5e-2, and to 1e-1 at 60x and at 300x (where
gradual magnitude did best at 5e-2, the edge of the first range). LeNet-5
(7 to 12 min a run) is swept at every ratio too: first at 125x; then at 10x
and 30x, because at 10x GSM diverged at 3e-2 in every seed (the baselines
did not) and at 30x a unit of fc1 had died by epoch 7; last at 60x and
300x, to 5e-2 because GSM did best at 3e-2, the edge of the first range
(1e-2 to 3e-2).
"""

from typing import Any, Mapping, NamedTuple, Optional


def sweep(ratio, learning_rates, seed=0, holdout_fraction=1 / 6):
  """One learning-rate sweep: a ratio, a seed and the lrs to try there."""
  return dict(ratio=ratio, seed=seed, learning_rates=learning_rates,
              holdout_fraction=holdout_fraction)


class Choice(NamedTuple):
  """A hyperparameter of a method chosen on validation before its lr sweep.

  Attributes:
    field: the ``config.gsm`` field it sets, e.g. ``'score_decay'``.
    values: the values tried; ``quick_values`` in ``--quick``.
    quick_values: see ``values``.
    tag: its short name in file and workdir names (``d`` in ``_d0.99_``).
    name: its name in RESULTS.md.
    model: where the sweep runs: this model, ...
    ratio: ... at this ratio, from the dense model of the lr sweep there ...
    learning_rate: ... at this peak lr ...
    seed: ... and seed, ...
    holdout_fraction: ... on the last this share of the training set.
  """
  field: str
  values: tuple
  quick_values: tuple
  tag: str
  name: str
  model: str
  ratio: float
  learning_rate: float
  seed: int = 0
  holdout_fraction: float = 1 / 6

  def sweep_values(self, quick=False):
    """The values tried (in ``--quick`` or not)."""
    return self.quick_values if quick else self.values


class OfPhase(float):
  """A `Method.config` value in epochs: this fraction of the pruning
  phase's (rounded), set by `plan.make_config` once the budget's epochs
  are, e.g. ``OfPhase(0.75)``."""


class PerModel(dict):
  """A `Method.config` value that differs by model, e.g.
  ``PerModel(lenet300=1e-3, lenet5=3e-3)``; `plan.make_config` takes the
  run's model's."""


class Method(NamedTuple):
  """One pruning method of the comparison.

  Attributes:
    name: its key in result files, workdirs and ``--methods``.
    label: its name in tables and figures.
    config: the config fields it sets (dotted keys: ``'gsm.score_decay'``;
      a `PerModel` value where they differ by model) on top of the model's
      config, ``pruning`` (the phase that prunes,
      `examples.paper.phases.pruning_phase`) at least.
    tuning: ``{model: (sweep, ...)}``, its learning-rate sweeps.
    fairness: its line in RESULTS.md's Fairness section; ``{c.…}`` fields
      are filled from the model's config (``c.gradual.update_every``).
    kind: ``'gsm'`` (the final prune is the method's own cut, no
      fine-tuning), ``'baseline'`` (what GSM is compared with), or
      ``'reference'`` (shown in the tables, compared with nothing).
    variant_of: the method a variant is compared with in the findings.
    choice: a hyperparameter chosen on validation first (`Choice`).
    holds_final_mask: it trains at its final mask, so the final prune must
      not change its accuracy (a run where it does is invalid).
    lottery: its runs at `plan.LOTTERY`'s ratios also retrain tickets.
    marker: its matplotlib format string in the figures.
    axis: what its ratio divides: ``'params'`` (the prunable weights kept)
      or ``'flops'``; methods on one axis share a table.
    ratios: ``{model: ratios}`` it runs at in the full plan, where not the
      plan's (`plan.FULL`); ``--quick`` runs every method at the quick
      plan's.
    quick: ``--quick`` runs it. False only for a variant whose config
      differs from its ``variant_of``'s in values alone (the same code
      paths, which ``--quick`` runs for that record).
  """
  name: str
  label: str
  config: Mapping[str, Any]
  tuning: Mapping[str, tuple]
  fairness: str
  kind: str = 'baseline'
  variant_of: Optional[str] = None
  choice: Optional[Choice] = None
  holds_final_mask: bool = False
  lottery: bool = False
  marker: str = 'o-'
  axis: str = 'params'
  ratios: Optional[Mapping[str, tuple]] = None
  quick: bool = True


_SWEEPS = {'lenet300': (sweep(60.0, (1e-2, 2e-2, 3e-2, 5e-2, 1e-1)),
                        sweep(10.0, (1e-2, 2e-2, 3e-2, 5e-2)),
                        sweep(30.0, (1e-2, 2e-2, 3e-2, 5e-2)),
                        sweep(125.0, (1e-2, 2e-2, 3e-2, 5e-2)),
                        sweep(300.0, (1e-2, 2e-2, 3e-2, 5e-2, 1e-1))),
           'lenet5': (sweep(125.0, (1e-2, 3e-2, 1e-1)),
                      sweep(10.0, (1e-2, 2e-2, 3e-2)),
                      sweep(30.0, (1e-2, 2e-2, 3e-2)),
                      sweep(60.0, (1e-2, 2e-2, 3e-2, 5e-2)),
                      sweep(300.0, (1e-2, 2e-2, 3e-2, 5e-2)))}

# The smoothed ranking's sweep is narrower: 1e-2 to 3e-2, which holds GSM's
# best at every LeNet-300 ratio (2e-2 or 3e-2). On LeNet-5 (10 to 15 min a
# run) 2e-2 and 3e-2, GSM's best at every ratio; and 1e-2 from 60x down:
# the smoothed ranking diverged at 2e-2 at 10x and 30x (and 3e-2 at 10x),
# where GSM did not; at 30x 3e-2 is left out (LeNet-5 diverges the more,
# the larger the lr: research/lenet5_divergence).
_SMOOTHED_SWEEPS = {
    'lenet300': tuple(sweep(r, (1e-2, 2e-2, 3e-2))
                      for r in (60.0, 10.0, 30.0, 125.0, 300.0)),
    'lenet5': (sweep(125.0, (2e-2, 3e-2)), sweep(300.0, (2e-2, 3e-2)),
               sweep(10.0, (1e-2, 2e-2, 3e-2)), sweep(30.0, (1e-2, 2e-2)),
               sweep(60.0, (1e-2, 2e-2, 3e-2)))}

# Structured methods remove whole neurons and channels (`find_groups`) to a
# FLOPs budget, at 2x, 4x and 8x fewer FLOPs. LeNet-300 (1.5 min a run) is
# swept at every budget, as the per-weight comparison is: first over GSM's
# range (1e-2 to 3e-2), then to 5e-3 and 2e-3, where most methods did best
# at the lowest lr tried, and at 8x to 5e-2, where per-weight GSM did best
# at 3e-2. LeNet-5 (10 to 20 min a run) is swept at every budget too, lower
# than LeNet-300: structured GSM diverged there at 2e-2 and 3e-2 and
# trained at 1e-2 (docs/structured.md).
_STRUCTURED = {'structure': 'channels', 'budget': 'flops'}
_FLOPS_RATIOS = {'lenet300': (2.0, 4.0, 8.0), 'lenet5': (2.0, 4.0, 8.0)}
_STRUCTURED_SWEEPS = {
    'lenet300': (sweep(4.0, (2e-3, 5e-3, 1e-2, 2e-2, 3e-2)),
                 sweep(2.0, (2e-3, 5e-3, 1e-2, 2e-2, 3e-2)),
                 sweep(8.0, (2e-3, 5e-3, 1e-2, 2e-2, 3e-2, 5e-2))),
    'lenet5': tuple(sweep(r, (5e-3, 1e-2, 2e-2)) for r in (4.0, 2.0, 8.0))}
# Structured GSM with the recipe of the final-prune study (#27): the
# smoothed ranking and a decay of the passive groups of their own, about
# 10 / (steps of the pruning phase) as docs/structured.md recommends:
# LeNet-300's 60 epochs take ~14k steps, LeNet-5's 16 ~3.5k (at 1e-3 its
# passive groups kept 31% of the kernels' norm and the cut cost 10 points).
# On LeNet-5 its sweep is lower than the baselines': at passive decay 1e-3
# it diverged at 1e-2 and 2e-2 and trained at 5e-3.
_STRUCTURED_GSM = {'pruning': 'gsm', **_STRUCTURED, 'gsm.score_decay': 0.9,
                   'gsm.passive_decay': PerModel(lenet300=1e-3, lenet5=3e-3)}
_STRUCTURED_GSM_SWEEPS = {**_STRUCTURED_SWEEPS,
                          'lenet5': tuple(sweep(r, (2e-3, 5e-3, 1e-2))
                                          for r in (4.0, 2.0, 8.0))}

METHODS = {m.name: m for m in (
    Method('gsm', 'GSM', {'pruning': 'gsm'}, _SWEEPS, kind='gsm',
           lottery=True, marker='o-',
           fairness='GSM: the paper\'s rule, ranking |g·w| '
           '(`gsm_optax.gsm`); its final global magnitude prune is the only '
           'cut, with no fine-tuning after it.'),
    Method('magnitude_ft', 'magnitude + FT', {'pruning': 'magnitude_ft'},
           _SWEEPS, holds_final_mask=True, marker='s-',
           fairness='magnitude + FT: one-shot global magnitude prune of the '
           'dense model, then training with the mask fixed (`fixed_mask`).'),
    Method('gradual_magnitude', 'gradual magnitude',
           {'pruning': 'gradual_magnitude'}, _SWEEPS, holds_final_mask=True,
           marker='^-',
           fairness='gradual magnitude: cubic schedule from 0 to the final '
           'sparsity over the first {c.gradual.end_fraction:.0%} of the '
           'phase, mask updates every {c.gradual.update_every} steps, '
           'global ranking (`gradual_magnitude_pruning`).'),
    Method('gsm_smoothed', 'GSM, smoothed', {'pruning': 'gsm'},
           _SMOOTHED_SWEEPS, kind='gsm', variant_of='gsm', marker='D:',
           choice=Choice('score_decay', values=(0.9, 0.99, 0.999),
                         quick_values=(0.99,), tag='d', name='decay',
                         model='lenet300', ratio=60.0, learning_rate=2e-2),
           fairness='GSM, smoothed: GSM ranking |m·w|, m an exponential '
           'average of the gradient (`gsm(..., score_decay=d)`); the rest '
           'as GSM. Its dense models were '
           'trained again from the same seeds (the shared ones\' workdirs '
           'were gone), so its dense column can differ from the others\' by '
           'float noise.'),
    # GSM at its best against gradual magnitude (#51): GMP's cubic schedule
    # for the ratio (every weight active at first, 1/C from the same 3/4 of
    # the phase at which GMP reaches its final sparsity) with the recipe's
    # smoothed ranking, and a passive decay of its own: the weights that
    # leave last have the last quarter of the phase (LeNet-300: 15 epochs,
    # about 3k steps, where momentum SGD's own decay at the dropped lr
    # would shrink them by about e^-0.5; LeNet-5: 4 epochs, about 1k) to
    # reach about e^-10, so 10 / 3k and 10 / 1k a step.
    Method('gsm_warmup', 'GSM, ratio warm-up + recipe',
           {'pruning': 'gsm', 'gsm.ratio_warmup_epochs': OfPhase(0.75),
            'gsm.score_decay': 0.9,
            'gsm.passive_decay': PerModel(lenet300=3e-3, lenet5=1e-2)},
           _SMOOTHED_SWEEPS, kind='gsm', variant_of='gsm', lottery=True,
           marker='v-',
           fairness='GSM, ratio warm-up + recipe: Q from N to N/C on gradual '
           'magnitude\'s cubic schedule over the same first '
           '{c.gradual.end_fraction:.0%} of the phase, the ranking smoothed '
           '(decay {c.gsm.score_decay:g}) and passive weights decayed by '
           '{c.gsm.passive_decay:g} a step; its final prune is the only cut, '
           'with no fine-tuning after it.'),
    # What the first rows of gsm_warmup suggested (#51), each swept at 60x
    # on LeNet-300 only (validation), kept or not: RESULTS.md says. The
    # best on validation there (decay 0.99) is swept and compared from 60x
    # up, the ratios of #51's goal.
    Method('gsm_warmup_no_passive', 'GSM, ratio warm-up + smoothed ranking',
           {'pruning': 'gsm', 'gsm.ratio_warmup_epochs': OfPhase(0.75),
            'gsm.score_decay': 0.9},
           {'lenet300': (sweep(60.0, (1e-2, 2e-2, 3e-2)),)}, kind='gsm',
           variant_of='gsm_warmup', ratios={'lenet300': ()}, marker='v:',
           quick=False,
           fairness='GSM, ratio warm-up + smoothed ranking: the same without '
           'the passive decay.'),
    Method('gsm_warmup_smoother', 'GSM, ratio warm-up + recipe, decay 0.99',
           {'pruning': 'gsm', 'gsm.ratio_warmup_epochs': OfPhase(0.75),
            'gsm.score_decay': 0.99,
            'gsm.passive_decay': PerModel(lenet300=3e-3, lenet5=1e-2)},
           {'lenet300': tuple(sweep(r, (1e-2, 2e-2, 3e-2))
                              for r in (60.0, 125.0, 300.0)),
            'lenet5': (sweep(125.0, (2e-2, 3e-2)), sweep(300.0, (2e-2, 3e-2)),
                       sweep(60.0, (1e-2, 2e-2, 3e-2)))}, kind='gsm',
           variant_of='gsm_warmup', ratios={'lenet300': (60.0, 125.0, 300.0),
                                            'lenet5': (125.0, 300.0, 60.0)},
           marker='v--', quick=False,
           fairness='GSM, ratio warm-up + recipe, decay 0.99: the same with '
           'the ranking smoothed ten times longer.'),
    # The warm-up without passive decay trained the best model before the
    # prune (89.71% on validation at 60x, lr 1e-2) but the prune took it to
    # 38%: decay the passive weights only once the warm-up has ended.
    Method('gsm_warmup_late_decay', 'GSM, ratio warm-up + late passive decay',
           {'pruning': 'gsm', 'gsm.ratio_warmup_epochs': OfPhase(0.75),
            'gsm.score_decay': 0.9, 'gsm.passive_decay_epoch': OfPhase(0.75),
            'gsm.passive_decay': PerModel(lenet300=6e-3, lenet5=2e-2)},
           {'lenet300': (sweep(60.0, (1e-2, 2e-2, 3e-2)),)}, kind='gsm',
           variant_of='gsm_warmup', ratios={'lenet300': ()}, marker='v-.',
           fairness='GSM, ratio warm-up + late passive decay: the same, the '
           'passive weights decayed by {c.gsm.passive_decay:g} a step only '
           'after the warm-up (the last quarter of the phase).'),
    Method('structured_gsm', 'structured GSM',
           {**_STRUCTURED_GSM, 'group_score': 'group_taylor'},
           _STRUCTURED_GSM_SWEEPS, kind='gsm', axis='flops', ratios=_FLOPS_RATIOS,
           marker='o-',
           fairness='structured GSM: GSM over whole neurons and channels '
           '(`gsm(..., groups=find_groups(...), budget=\'flops\')`), '
           'ranked by |Σ m·w| per group (m the smoothed gradient, decay '
           '{c.gsm.score_decay:g}), passive groups also decayed by '
           '{c.gsm.passive_decay:g} a step; its final group prune is the only '
           'cut, with no fine-tuning after it.'),
    Method('structured_gsm_weight_taylor', 'structured GSM, weight Taylor',
           {**_STRUCTURED_GSM, 'group_score': 'weight_taylor'},
           _STRUCTURED_GSM_SWEEPS, kind='gsm', variant_of='structured_gsm',
           axis='flops', ratios=_FLOPS_RATIOS, marker='D:',
           fairness='structured GSM, weight Taylor: the same, each group scored by '
           'the sum of its weights\' own scores |m·w| instead.'),
    Method('filter_magnitude_ft', 'filter magnitude + FT',
           {'pruning': 'magnitude_ft', **_STRUCTURED, 'group_norm': 'l1'},
           _STRUCTURED_SWEEPS, holds_final_mask=True, axis='flops',
           ratios=_FLOPS_RATIOS, marker='s-',
           fairness='filter magnitude + FT (Li et al. 2017): one-shot '
           'global prune of whole neurons and channels of the dense model, '
           'ranked by their {c.group_norm} norm (the sum of |w|) per FLOP '
           'saved, then training with the mask fixed.'),
    Method('gradual_channel_taylor', 'gradual channels, Taylor',
           {'pruning': 'gradual_magnitude', **_STRUCTURED,
            'gradual.score': 'group_taylor'}, _STRUCTURED_SWEEPS,
           holds_final_mask=True, axis='flops', ratios=_FLOPS_RATIOS,
           marker='^-',
           fairness='gradual channels, Taylor (after Molchanov et al. 2019): '
           'whole neurons and channels removed on the cubic schedule over '
           'the first {c.gradual.end_fraction:.0%} of the phase, every '
           '{c.gradual.update_every} steps, ranked globally by |Σ u·w| per '
           'FLOP (u the momentum update); a removed one stays removed.'),
    # What structure costs: per-weight pruning at the structured rows'
    # parameter count. On LeNet-300 (dense layers only) FLOPs are
    # proportional to the weights, so N× fewer FLOPs by whole neurons keeps
    # about 1/N of the weights: these run at compression N (per weight).
    Method('gsm_same_params', 'GSM per weight (same params)',
           {'pruning': 'gsm'}, {'lenet300': _STRUCTURED_SWEEPS['lenet300']},
           kind='reference', axis='flops', ratios={'lenet300': (2.0, 4.0, 8.0)},
           marker='x--',
           fairness='GSM per weight (same params): reference, the paper\'s '
           'GSM at compression N beside the N× FLOPs rows (LeNet-300 only, '
           'where that is about the structured models\' parameter count); '
           'its dense matrices are no faster.'),
    Method('gradual_same_params', 'gradual magnitude (same params)',
           {'pruning': 'gradual_magnitude'},
           {'lenet300': _STRUCTURED_SWEEPS['lenet300']}, kind='reference',
           holds_final_mask=True, axis='flops',
           ratios={'lenet300': (2.0, 4.0, 8.0)}, marker='+--',
           fairness='gradual magnitude (same params): reference, as above, '
           'Zhu & Gupta per weight.'),
)}


AXES = {'params': 'compression ratio (prunable weights / kept)',
        'flops': 'FLOPs reduction (dense FLOPs / kept)'}


def label(name):
  """The label of method ``name`` in tables and figures."""
  return METHODS[name].label


def on_axis(axis):
  """The names of the methods whose ratio divides ``axis``, in order."""
  return tuple(m.name for m in METHODS.values() if m.axis == axis)
