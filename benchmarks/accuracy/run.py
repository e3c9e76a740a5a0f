"""GSM against the pruning methods users would pick instead, on real data.

Usage:
  python -m benchmarks.accuracy.run            # the full comparison (hours on 2 CPUs)
  python -m benchmarks.accuracy.run --quick    # minutes: the harness, end to end
  python -m benchmarks.accuracy.run --part tuning   # only the learning-rate sweep
  python -m benchmarks.accuracy.run --models lenet5 --seeds 1 --ratios 125,300
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
``benchmarks/results/accuracy/<model>_<method>_r<ratio>_s<seed>.json``; a run whose
result exists at the lr chosen is skipped, so an interrupted benchmark
resumes. At the end `report` writes the generated part of benchmarks/RESULTS.md and
the figures from all results.
"""

import argparse
import json
import os

from benchmarks.accuracy import plan as plan_lib
from benchmarks.accuracy import report
from benchmarks.accuracy import results as results_lib
from benchmarks.accuracy.plan import METHODS


def train_and_save(config, workdir, path, budget, **fields):
  """Trains one run (resuming from ``workdir``) and writes its result."""
  from examples.paper import train  # pylint: disable=import-outside-toplevel
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
    default_lr = plan_lib.default_learning_rate(model)
    model_ratios = budget['ratios'] if ratios is None else ratios
    lrs = {(ratio, method): results_lib.comparison_learning_rate(
        tuning or {}, results_dir, model, ratio, method)
           for ratio in model_ratios for method in methods}
    for seed in budget['seeds'] if seeds is None else seeds:
      dense_dir = os.path.join(runs_dir, model, f's{seed}',
                               f'gsm_r{budget["ratios"][0]:g}')
      for ratio in model_ratios:
        for method in methods:
          lr = lrs[(ratio, method)]
          path = plan_lib.result_path(results_dir, model, method, ratio, seed)
          if results_lib.has_result(path, lr, default_lr):
            continue
          workdir = os.path.join(
              runs_dir, model, f's{seed}', f'{method}_r{ratio:g}' +
              ('' if lr == default_lr else f'_lr{lr:g}'))
          first = workdir == dense_dir
          if not first:
            require_dense(dense_dir, f'{model} seed {seed}',
                          f'ratio {budget["ratios"][0]:g} of this seed')
          config = plan_lib.make_config(model, budget, method, ratio, seed,
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
          path = plan_lib.tuning_path(results_dir, model, method, ratio, lr)
          if os.path.exists(path):
            continue
          workdir = os.path.join(sweep_dir, f'{method}_lr{lr:g}')
          first = workdir == dense_dir
          if not first:
            require_dense(dense_dir, f'{model} tuning at {ratio:g}x',
                          'its GSM run at lr '
                          f'{sweep["learning_rates"][0]:g}')
          config = plan_lib.make_config(model, budget, method, ratio, sweep['seed'],
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
  benchmarks_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  plan = plan_lib.QUICK if args.quick else plan_lib.FULL
  if args.models:
    plan = {m: plan[m] for m in args.models.split(',')}
  results_dir = args.results or os.path.join(
      benchmarks_dir, 'results_quick' if args.quick else 'results/accuracy')
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
    tuning = plan_lib.TUNING_QUICK if args.quick else plan_lib.TUNING
    run_tuning({m: t for m, t in tuning.items() if m in plan}, plan,
               results_dir, runs_dir, args.dataset, methods,
               learning_rates, ratios)
  if args.part in ('all', 'comparison'):
    run_all(plan, results_dir, runs_dir, args.dataset, seeds, ratios,
            methods, not args.no_lottery,
            plan_lib.TUNING_QUICK if args.quick else plan_lib.TUNING)
  full = not args.quick and args.results is None
  report.write(results_dir, plan_lib.QUICK if args.quick else plan_lib.FULL,
               md_path=os.path.join(benchmarks_dir, 'RESULTS.md') if full
               else None,
               speed_dir=os.path.join(benchmarks_dir, 'results', 'speed')
               if full else None)


if __name__ == '__main__':
  main()
