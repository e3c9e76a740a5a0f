"""What the accuracy benchmark runs: models, budgets, ratios, seeds, and
where each run's result and workdir go. The methods and their sweeps are
records in `methods`.

The decisions (which learning rate each method trains with) are in
`results`; running the plan is `run`'s job.
"""

import importlib
import os

from benchmarks.accuracy import methods

LOTTERY = {'lenet300': (60.0,), 'lenet5': (125.0, 300.0)}
CONFIGS = {'lenet300': 'lenet300_fmnist', 'lenet5': 'lenet5_fmnist'}

# Epoch budgets (dense, pruning phase) per model: LeNet-5's convolutions run
# ~25 s an epoch on the 2-core CPU, so its budget is smaller.
FULL = {'lenet300': dict(ratios=(10.0, 30.0, 60.0, 125.0, 300.0),
                         seeds=(0, 1, 2), dense_epochs=20, prune_epochs=60,
                         decay_epochs=(40, 52)),
        'lenet5': dict(ratios=(125.0, 300.0, 10.0, 30.0, 60.0), seeds=(0, 1, 2),
                       dense_epochs=8, prune_epochs=16, decay_epochs=(11, 14))}
# --quick checks the harness, not the models: one epoch each, the pruned
# model neither saved nor timed (``config``: fields set in every run); a
# batch of 200 makes the sweeps' split (5/6 of 512 examples) and the full
# one both 2 steps an epoch, so their runs compile one step (run.py).
QUICK = {'lenet300': dict(ratios=(60.0,), seeds=(0,), dense_epochs=1,
                          prune_epochs=1, decay_epochs=(),
                          config={'export': False, 'batch_size': 200})}

# --quick sweeps every method at one ratio over two lrs; a method's own
# sweeps (the full plan) are in its record (`methods.METHODS`).
TUNING_QUICK = {'lenet300': (methods.sweep(60.0, (1e-2, 3e-2)),)}

# The paper's MNIST numbers (PAPER.md, Tables 1 and 4) beside the analogues.
PAPER_TABLE1 = {('lenet300', 60.0): (98.19, 98.18),
                ('lenet5', 125.0): (99.21, 99.22),
                ('lenet5', 300.0): (99.21, 99.06)}
PAPER_TABLE4 = {('lenet300', 60.0): (97.39, 98.22),  # magnitude, GSM ticket
                ('lenet5', 125.0): (97.60, 99.04),
                ('lenet5', 300.0): (11.35, 98.88)}


def method_ratios(method, model, budget, quick=False):
  """The ratios ``method`` runs at on ``model``: its record's
  (`methods.Method.ratios`; none for a model it does not list) in the full
  plan, else the plan's."""
  own = methods.METHODS[method].ratios
  if quick or own is None:
    return budget['ratios']
  return own.get(model, ())  # a model it does not list, it does not run on


def tuning_for(method, quick=False):
  """The learning-rate sweeps of ``method``."""
  return TUNING_QUICK if quick else methods.METHODS[method].tuning


def result_path(results_dir, model, method, ratio, seed):
  return os.path.join(results_dir, f'{model}_{method}_r{ratio:g}_s{seed}.json')


def tuning_path(results_dir, model, method, ratio, lr):
  return os.path.join(results_dir, 'tuning',
                      f'{model}_r{ratio:g}_{method}_lr{lr:g}.json')


def pruning_phase(model):
  """The pruning phase's settings in the model's config (``config.gsm``)."""
  return importlib.import_module(
      f'examples.paper.configs.{CONFIGS[model]}').get_config().gsm


def default_learning_rate(model):
  """The pruning phase's peak lr in the model's config."""
  return pruning_phase(model).learning_rate


def describe_pruning_phase(model):
  """``config.gsm``'s momentum, peak lr, warm-up and weight decay, in words
  (RESULTS.md states the protocol from the config, not from prose)."""
  g = pruning_phase(model)
  return (f"momentum {g.momentum:g}{' Nesterov' if g.nesterov else ''}, peak "
          f'lr {g.learning_rate:g}, warm-up {g.warmup_epochs:g} epoch'
          f"{'' if g.warmup_epochs == 1 else 's'}, x0.1 steps, weight decay "
          f'{g.weight_decay:g}')


def choice_path(results_dir, method, value=None):
  """The result of ``method``'s `methods.Choice` sweep at ``value`` (None:
  a glob pattern of every value's)."""
  c = methods.METHODS[method].choice
  value = '*' if value is None else f'{value:g}'
  return os.path.join(results_dir, 'tuning', c.name,
                      f'{c.model}_r{c.ratio:g}_{c.tag}{value}_lr'
                      f'{c.learning_rate:g}.json')


def choice_workdir(runs_dir, method, value):
  """The workdir of ``method``'s `methods.Choice` sweep at ``value``."""
  c = methods.METHODS[method].choice
  return os.path.join(sweep_dir(runs_dir, c.model, c.ratio),
                      f'{method}_{c.tag}{value:g}')


def run_workdir(runs_dir, model, seed, method, ratio, lr, default_lr):
  """The workdir of one comparison run (named by its lr where that is not
  the config's)."""
  return os.path.join(runs_dir, model, f's{seed}', f'{method}_r{ratio:g}' +
                      ('' if lr == default_lr else f'_lr{lr:g}'))


def dense_workdir(runs_dir, model, seed, budget, lr, default_lr):
  """The comparison run that trains a seed's dense model: GSM's at the
  plan's first ratio (at ``lr``, its lr there)."""
  return run_workdir(runs_dir, model, seed, 'gsm', budget['ratios'][0], lr,
                     default_lr)


def sweep_dir(runs_dir, model, ratio):
  """The workdirs of a learning-rate sweep (and of a `methods.Choice` sweep
  at its ratio, which shares its dense model)."""
  return os.path.join(runs_dir, 'tuning', model, f'r{ratio:g}')


def sweep_workdir(runs_dir, model, ratio, method, lr):
  """The workdir of one sweep point."""
  return os.path.join(sweep_dir(runs_dir, model, ratio), f'{method}_lr{lr:g}')


def sweep_dense_run(model, ratio, quick=False):
  """``(method, lr)`` of the sweep run that trains the dense model of every
  sweep of ``model`` at ``ratio``: GSM's first lr there, else the first
  record's (in `methods.METHODS` order) with a sweep there."""
  for name in ('gsm',) + tuple(methods.METHODS):
    for s in tuning_for(name, quick).get(model, ()):
      if s['ratio'] == ratio:
        return name, s['learning_rates'][0]
  raise ValueError(f'No learning-rate sweep of {model} at {ratio:g}x.')


def make_config(model, budget, method, ratio, seed, dense_from, dataset,
                lottery=True, learning_rate=None, overrides=None):
  """The config of one run: the model's, with the budget's ``config``
  fields, ``method``'s record's (`methods.Method.config`) and
  ``overrides`` (dotted keys, e.g. a `methods.Choice`'s value) set, the budget's epochs, and the run's seed,
  ratio, dense source, dataset and lr."""
  config = importlib.import_module(
      f'examples.paper.configs.{CONFIGS[model]}').get_config()
  record = methods.METHODS[method]
  config.dense.epochs = budget['dense_epochs']
  config.gsm.epochs = budget['prune_epochs']
  for key, value in {**budget.get('config', {}), **record.config,
                     **(overrides or {})}.items():
    if isinstance(value, methods.PerModel):
      value = value[model]
    if isinstance(value, methods.OfPhase):
      value = int(round(value * config.gsm.epochs))
    *parents, field = key.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[field] = value
  config.seed = seed
  config.ratio = ratio
  config.dense.epochs = budget['dense_epochs']
  config.gsm.epochs = budget['prune_epochs']
  config.gsm.decay_epochs = budget['decay_epochs']
  config.dense.decay_epochs = tuple(
      e for e in (int(budget['dense_epochs'] * 0.6),
                  int(budget['dense_epochs'] * 0.85)) if e > 0)
  config.dense_from = dense_from
  config.lottery = (lottery and record.lottery and
                    ratio in LOTTERY.get(model, ()))
  if learning_rate is not None:
    config.gsm.learning_rate = learning_rate
  if dataset:
    config.dataset = dataset
  return config
