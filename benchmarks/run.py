"""GSM against the pruning methods users would pick instead, on real data.

Usage:
  python -m benchmarks.run            # the full comparison (hours on 2 CPUs)
  python -m benchmarks.run --quick    # minutes: the harness, end to end
  python -m benchmarks.run --part tuning   # only the learning-rate sweep
  python -m benchmarks.run --models lenet5 --seeds 1 --ratios 125,300
                                      # a slice, e.g. one of two workers

For each model and seed, one dense model is trained (inside the first GSM
run); every method then starts from it with the same epochs and learning-rate
schedule: GSM, one-shot global magnitude pruning + fine-tuning (Han et al.
2015), and gradual magnitude pruning with the cubic schedule (Zhu & Gupta
2017, global ranking). The peak lr is the config's, except at a ratio with a
learning-rate sweep in ``TUNING`` (run first, on a validation split), where
each method takes its own best there. Lottery tickets (paper Table 4) are
retrained from the initial weights in the GSM runs at the ratios of
``LOTTERY``. Every run writes
``benchmarks/results/<model>_<method>_r<ratio>_s<seed>.json``; a run whose
result exists at the lr chosen is skipped, so an interrupted benchmark
resumes. At the end `benchmarks.report` writes RESULTS.md and the figures
from all results.
"""

import argparse
import importlib
import json
import os

from benchmarks import report

METHODS = ('gsm', 'magnitude_ft', 'gradual_magnitude')
LOTTERY = {'lenet300': (60.0,), 'lenet5': (125.0, 300.0)}
CONFIGS = {'lenet300': 'lenet300_fmnist', 'lenet5': 'lenet5_fmnist'}

# Epoch budgets (dense, pruning phase) per model: LeNet-5's convolutions run
# ~25 s an epoch on the 2-core CPU, so its budget is smaller.
FULL = {'lenet300': dict(ratios=(10.0, 30.0, 60.0, 125.0, 300.0),
                         seeds=(0, 1, 2), dense_epochs=20, prune_epochs=60,
                         decay_epochs=(40, 52)),
        'lenet5': dict(ratios=(125.0, 300.0, 10.0, 30.0, 60.0), seeds=(0, 1, 2),
                       dense_epochs=8, prune_epochs=16, decay_epochs=(11, 14))}
QUICK = {'lenet300': dict(ratios=(10.0, 60.0), seeds=(0,), dense_epochs=1,
                          prune_epochs=1, decay_epochs=())}

# Fairness: each method's pruning-phase learning rate (momentum 0.99
# Nesterov, so the effective step is lr / (1 - 0.99)) is swept on a
# validation split, the last 1/6 of the training set, never the test set;
# with the plan's budget for that model and its own dense model. The
# comparison then trains each method at a swept ratio with its best lr there,
# and at every other ratio with the config's lr (3e-2: the best of every
# method in the first sweeps, at 60x and 125x over 1e-2, 3e-2 and 1e-1).
# LeNet-300 (about 1.5 min a run on one core) is swept at every ratio over
# 1e-2 to 5e-2, and to 1e-1 at 60x and at 300x (where gradual magnitude did
# best at 5e-2, the edge of the first range). LeNet-5 (7 to 12 min a run)
# is swept at every ratio too: first at 125x; then at 10x and 30x, because at
# 10x GSM diverged at 3e-2 in every seed (the baselines did not) and at 30x a
# unit of fc1 had died by epoch 7; last at 60x and 300x, to 5e-2 because
# GSM did best at 3e-2, the edge of the first range (1e-2 to 3e-2).


def sweep(ratio, learning_rates, seed=0, holdout_fraction=1 / 6):
  """One learning-rate sweep of ``TUNING``."""
  return dict(ratio=ratio, seed=seed, learning_rates=learning_rates,
              holdout_fraction=holdout_fraction)


TUNING = {'lenet300': (sweep(60.0, (1e-2, 2e-2, 3e-2, 5e-2, 1e-1)),
                       sweep(10.0, (1e-2, 2e-2, 3e-2, 5e-2)),
                       sweep(30.0, (1e-2, 2e-2, 3e-2, 5e-2)),
                       sweep(125.0, (1e-2, 2e-2, 3e-2, 5e-2)),
                       sweep(300.0, (1e-2, 2e-2, 3e-2, 5e-2, 1e-1))),
          'lenet5': (sweep(125.0, (1e-2, 3e-2, 1e-1)),
                     sweep(10.0, (1e-2, 2e-2, 3e-2)),
                     sweep(30.0, (1e-2, 2e-2, 3e-2)),
                     sweep(60.0, (1e-2, 2e-2, 3e-2, 5e-2)),
                     sweep(300.0, (1e-2, 2e-2, 3e-2, 5e-2)))}
TUNING_QUICK = {'lenet300': (sweep(60.0, (1e-2, 3e-2)),)}


def result_path(results_dir, model, method, ratio, seed):
  return os.path.join(results_dir, f'{model}_{method}_r{ratio:g}_s{seed}.json')


def tuning_path(results_dir, model, method, ratio, lr):
  return os.path.join(results_dir, 'tuning',
                      f'{model}_r{ratio:g}_{method}_lr{lr:g}.json')


def default_learning_rate(model):
  """The pruning phase's peak lr in the model's config."""
  return importlib.import_module(
      f'examples.configs.{CONFIGS[model]}').get_config().gsm.learning_rate


def make_config(model, budget, method, ratio, seed, dense_from, dataset,
                lottery=True, learning_rate=None):
  config = importlib.import_module(
      f'examples.configs.{CONFIGS[model]}').get_config()
  config.seed = seed
  config.ratio = ratio
  config.pruning = method
  config.dense.epochs = budget['dense_epochs']
  config.gsm.epochs = budget['prune_epochs']
  config.gsm.decay_epochs = budget['decay_epochs']
  config.dense.decay_epochs = tuple(
      e for e in (int(budget['dense_epochs'] * 0.6),
                  int(budget['dense_epochs'] * 0.85)) if e > 0)
  config.dense_from = dense_from
  config.lottery = (lottery and method == 'gsm' and
                    ratio in LOTTERY.get(model, ()))
  if learning_rate is not None:
    config.gsm.learning_rate = learning_rate
  if dataset:
    config.dataset = dataset
  return config


def train_and_save(config, workdir, path, budget, **fields):
  """Trains one run (resuming from ``workdir``) and writes its result."""
  from examples import train  # pylint: disable=import-outside-toplevel
  summary = train.train_and_evaluate(config, workdir)
  summary.update(seed=config.seed, method=config.pruning,
                 epochs={'dense': budget['dense_epochs'],
                         'prune': budget['prune_epochs']},
                 learning_rate=config.gsm.learning_rate, **fields)
  with open(path, 'w') as f:
    json.dump(summary, f, indent=1)


def require_dense(dense_dir, what, first_run):
  """Raises unless ``dense_dir`` holds the end of a dense phase."""
  if not os.path.isdir(os.path.join(dense_dir, 'phase_ends', 'dense')):
    raise FileNotFoundError(f'{what}: no dense model in {dense_dir}; run '
                            f'{first_run} first.')


def has_result(path, learning_rate, default_lr):
  """Whether ``path`` holds a result trained at ``learning_rate`` (one
  without the field, written before it was recorded, ran at ``default_lr``)."""
  if not os.path.exists(path):
    return False
  with open(path) as f:
    return report.learning_rate_of(json.load(f), default_lr) == learning_rate


def comparison_learning_rate(tuning, results_dir, model, ratio, method):
  """The pruning lr of ``method`` at ``ratio`` in the comparison.

  The best on validation of the sweep at ``ratio`` when ``tuning`` holds one
  (every point must have been run), else the config's lr.
  """
  sweeps = [s for s in tuning.get(model, ()) if s['ratio'] == ratio]
  if not sweeps:
    return default_learning_rate(model)
  points = []
  for lr in sweeps[0]['learning_rates']:
    path = tuning_path(results_dir, model, method, ratio, lr)
    if not os.path.exists(path):
      raise FileNotFoundError(
          f'{model} {method} at {ratio:g}x: the comparison takes its lr from '
          f'the sweep, and {path} is missing; run --part tuning first.')
    with open(path) as f:
      points.append(json.load(f))
  best = report.best_learning_rates(points).get((model, ratio, method))
  if best is None:
    raise ValueError(f'{model} {method} at {ratio:g}x diverged at every lr '
                     f'of the sweep {sweeps[0]["learning_rates"]}; widen it.')
  return best[0]


def run_all(plan, results_dir, runs_dir, dataset=None, seeds=None,
            ratios=None, methods=METHODS, lottery=True, tuning=None):
  """Runs every (model, seed, ratio, method) of ``plan`` without a result.

  ``seeds``, ``ratios`` and ``methods`` (optional) restrict the plan to a
  slice, in the order given; ``lottery=False`` skips the lottery tickets
  (their result fields stay empty). The dense model of a seed is always
  trained by the GSM run at the plan's first ratio, so a slice of later
  ratios needs that run first. At a ratio swept in ``tuning`` each method
  trains with its best lr there (`comparison_learning_rate`); a result
  trained with another lr is run again, in a workdir named by its lr.
  """
  os.makedirs(results_dir, exist_ok=True)
  for model, budget in plan.items():
    default_lr = default_learning_rate(model)
    model_ratios = budget['ratios'] if ratios is None else ratios
    lrs = {(ratio, method): comparison_learning_rate(
        tuning or {}, results_dir, model, ratio, method)
           for ratio in model_ratios for method in methods}
    for seed in budget['seeds'] if seeds is None else seeds:
      dense_dir = os.path.join(runs_dir, model, f's{seed}',
                               f'gsm_r{budget["ratios"][0]:g}')
      for ratio in model_ratios:
        for method in methods:
          lr = lrs[(ratio, method)]
          path = result_path(results_dir, model, method, ratio, seed)
          if has_result(path, lr, default_lr):
            continue
          workdir = os.path.join(
              runs_dir, model, f's{seed}', f'{method}_r{ratio:g}' +
              ('' if lr == default_lr else f'_lr{lr:g}'))
          first = workdir == dense_dir
          if not first:
            require_dense(dense_dir, f'{model} seed {seed}',
                          f'ratio {budget["ratios"][0]:g} of this seed')
          config = make_config(model, budget, method, ratio, seed,
                               '' if first else dense_dir, dataset, lottery,
                               learning_rate=lr)
          print(f'== {model} {method} {ratio:g}x seed {seed} lr {lr:g}',
                flush=True)
          train_and_save(config, workdir, path, budget)


def run_tuning(tuning, plan, results_dir, runs_dir, dataset=None,
               methods=METHODS, learning_rates=None, ratios=None):
  """Sweeps the pruning-phase learning rate of ``methods`` on validation.

  Each sweep of ``tuning[model]`` (a ratio, a seed and its learning rates)
  writes ``<results_dir>/tuning/<model>_r<ratio>_<method>_lr<lr>.json``; a
  sweep point whose result exists is skipped. ``learning_rates`` and
  ``ratios`` (optional) restrict the sweeps to those of their points. A
  sweep's dense model is trained by its GSM run at its first learning rate,
  so a slice of other points needs that run first.
  """
  os.makedirs(os.path.join(results_dir, 'tuning'), exist_ok=True)
  for model, sweeps in tuning.items():
    budget = plan[model]
    for sweep in sweeps:
      ratio = sweep['ratio']
      if ratios is not None and ratio not in ratios:
        continue
      sweep_dir = os.path.join(runs_dir, 'tuning', model, f'r{ratio:g}')
      dense_dir = os.path.join(sweep_dir,
                               f'gsm_lr{sweep["learning_rates"][0]:g}')
      for lr in sweep['learning_rates']:
        if learning_rates is not None and lr not in learning_rates:
          continue
        for method in methods:
          path = tuning_path(results_dir, model, method, ratio, lr)
          if os.path.exists(path):
            continue
          workdir = os.path.join(sweep_dir, f'{method}_lr{lr:g}')
          first = workdir == dense_dir
          if not first:
            require_dense(dense_dir, f'{model} tuning at {ratio:g}x',
                          'its GSM run at lr '
                          f'{sweep["learning_rates"][0]:g}')
          config = make_config(model, budget, method, ratio, sweep['seed'],
                               '' if first else dense_dir, dataset,
                               lottery=False, learning_rate=lr)
          config.holdout_fraction = sweep['holdout_fraction']
          print(f'== tuning {model} {method} {ratio:g}x lr {lr:g}',
                flush=True)
          train_and_save(config, workdir, path, budget)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--models', default=None,
                      help='comma-separated subset, e.g. lenet300')
  parser.add_argument('--part', choices=('all', 'tuning', 'comparison'),
                      default='all',
                      help='the learning-rate sweep, the comparison, or both')
  parser.add_argument('--seeds', default=None,
                      help='comma-separated subset of the seeds, e.g. 1,2')
  parser.add_argument('--ratios', default=None,
                      help='comma-separated subset of the ratios (of the '
                      'comparison, or of the sweeps with --part tuning), '
                      'e.g. 125')
  parser.add_argument('--methods', default=','.join(METHODS),
                      help='comma-separated subset of ' + ', '.join(METHODS))
  parser.add_argument('--learning-rates', default=None,
                      help='comma-separated subset of the sweep (--part '
                      'tuning), e.g. 0.01')
  parser.add_argument('--no-lottery', action='store_true',
                      help='skip the lottery tickets (to save time)')
  parser.add_argument('--results', default=None)
  parser.add_argument('--runs', default=None)
  parser.add_argument('--dataset', default=None,
                      help="override the data, e.g. 'synthetic' in tests")
  args = parser.parse_args()
  here = os.path.dirname(os.path.abspath(__file__))
  plan = QUICK if args.quick else FULL
  if args.models:
    plan = {m: plan[m] for m in args.models.split(',')}
  results_dir = args.results or os.path.join(
      here, 'results_quick' if args.quick else 'results')
  runs_dir = args.runs or os.path.join(
      'runs', 'benchmarks_quick' if args.quick else 'benchmarks')
  seeds = args.seeds and [int(s) for s in args.seeds.split(',')]
  ratios = args.ratios and [float(r) for r in args.ratios.split(',')]
  learning_rates = args.learning_rates and [
      float(lr) for lr in args.learning_rates.split(',')]
  methods = args.methods.split(',')
  if set(methods) - set(METHODS):
    parser.error(f'--methods: unknown {set(methods) - set(METHODS)}; '
                 f'choose from {METHODS}.')
  if args.part in ('all', 'tuning'):
    tuning = TUNING_QUICK if args.quick else TUNING
    run_tuning({m: t for m, t in tuning.items() if m in plan}, plan,
               results_dir, runs_dir, args.dataset, methods,
               learning_rates, ratios)
  if args.part in ('all', 'comparison'):
    run_all(plan, results_dir, runs_dir, args.dataset, seeds, ratios,
            methods, not args.no_lottery,
            TUNING_QUICK if args.quick else TUNING)
  report.write(results_dir, QUICK if args.quick else FULL)


if __name__ == '__main__':
  main()
