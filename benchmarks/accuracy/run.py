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

from benchmarks.accuracy import dense_models
from benchmarks.accuracy import plan as plan_lib
from benchmarks.accuracy import report
from benchmarks.accuracy import results as results_lib
from benchmarks.accuracy.plan import METHODS


def train_and_save(config, workdir, path, budget, method, **fields):
  """Trains one run (resuming from ``workdir``) and writes its result, with
  GSM's per-epoch churn and prune diagnostic where it logged them."""
  from examples.paper import train  # pylint: disable=import-outside-toplevel
  summary = train.train_and_evaluate(config, workdir)
  summary.update(seed=config.seed, method=method,
                 epochs={'dense': budget['dense_epochs'],
                         'prune': budget['prune_epochs']},
                 learning_rate=config.gsm.learning_rate,
                 score_decay=config.gsm.get('score_decay'),
                 **results_lib.pruning_phase_curves(workdir, config.pruning),
                 **fields)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(summary, f, indent=1)


def run_all(plan, results_dir, runs_dir, dataset=None, seeds=None,
            ratios=None, methods=METHODS, lottery=True, tuning=None,
            lr_from=None, retrain_dense=False,
            decays=plan_lib.SCORE_DECAYS):
  """Runs every (model, seed, ratio, method) of ``plan`` without a result.

  ``seeds``, ``ratios`` and ``methods`` (optional) restrict the plan to a
  slice, in the order given; ``lottery=False`` skips the lottery tickets
  (their result fields stay empty). The dense model of a seed is always
  trained by the GSM run at the plan's first ratio, so a slice of later
  ratios needs that run first. At a ratio swept in ``tuning`` each method
  trains with its best lr there (`comparison_learning_rate`); a result
  trained with another lr is run again, in a workdir named by its lr.
  ``tuning``: the sweeps, or ``method -> sweeps`` (`plan.tuning_for`).
  ``lr_from={'gsm_smoothed': 'gsm'}`` gives a method another's lr instead
  of its own sweep's (recorded in the result); ``retrain_dense`` see
  `dense_source`; ``decays``: the decay sweep that `gsm_smoothed`'s decay
  comes from.
  """
  lr_from = lr_from or {}
  os.makedirs(results_dir, exist_ok=True)
  for model, budget in plan.items():
    default_lr = plan_lib.default_learning_rate(model)
    model_ratios = budget['ratios'] if ratios is None else ratios
    lrs = {}
    for method in methods:
      source = lr_from.get(method, method)
      sweeps = tuning(source) if callable(tuning) else tuning
      for ratio in model_ratios:
        lrs[(ratio, method)] = results_lib.comparison_learning_rate(
            sweeps or {}, results_dir, model, ratio, source)
    decay = (results_lib.smoothed_score_decay(results_dir, decays)
             if 'gsm_smoothed' in methods else None)
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
          dense_from = '' if first else dense_models.dense_source(
              dense_dir, f'{model} seed {seed}',
              f'ratio {budget["ratios"][0]:g} of this seed', retrain_dense,
              workdir)
          config = plan_lib.make_config(model, budget, method, ratio, seed,
                                        dense_from, dataset, lottery,
                                        learning_rate=lr, score_decay=decay)
          print(f'== {model} {method} {ratio:g}x seed {seed} lr {lr:g}',
                flush=True)
          fields = ({'learning_rate_of': lr_from[method]}
                    if method in lr_from else {})
          train_and_save(config, workdir, path, budget, method, **fields)


def run_tuning(tuning, plan, results_dir, runs_dir, dataset=None,
               methods=METHODS, learning_rates=None, ratios=None,
               retrain_dense=False, decays=plan_lib.SCORE_DECAYS,
               dense_tuning=None):
  """Sweeps the pruning-phase learning rate of ``methods`` on validation.

  Each sweep of ``tuning[model]`` (a ratio, a seed and its learning rates)
  writes ``<results_dir>/tuning/<model>_r<ratio>_<method>_lr<lr>.json``; a
  sweep point whose result exists is skipped. ``learning_rates`` and
  ``ratios`` (optional) restrict the sweeps to those of their points. A
  sweep's dense model is trained by the GSM run at the first learning rate
  of the sweep at that ratio in ``dense_tuning`` (GSM's sweeps; default
  ``tuning``), so a slice of other points needs that run first.
  """
  os.makedirs(os.path.join(results_dir, 'tuning'), exist_ok=True)
  decay = (results_lib.smoothed_score_decay(results_dir, decays)
           if 'gsm_smoothed' in methods else None)
  for model, sweeps in tuning.items():
    budget = plan[model]
    for sweep in sweeps:
      ratio = sweep['ratio']
      if ratios is not None and ratio not in ratios:
        continue
      first_lr = plan_lib.sweep_dense_lr(dense_tuning or tuning, model, ratio,
                                         sweep['learning_rates'][0])
      dense_dir = plan_lib.sweep_workdir(runs_dir, model, ratio, 'gsm',
                                         first_lr)
      for lr in sweep['learning_rates']:
        if learning_rates is not None and lr not in learning_rates:
          continue
        for method in methods:
          path = plan_lib.tuning_path(results_dir, model, method, ratio, lr)
          if os.path.exists(path):
            continue
          workdir = plan_lib.sweep_workdir(runs_dir, model, ratio, method, lr)
          first = workdir == dense_dir
          dense_from = '' if first else dense_models.dense_source(
              dense_dir, f'{model} tuning at {ratio:g}x',
              f'its GSM run at lr {first_lr:g}',
              retrain_dense, workdir)
          config = plan_lib.make_config(model, budget, method, ratio,
                                        sweep['seed'], dense_from, dataset,
                                        lottery=False, learning_rate=lr,
                                        score_decay=decay)
          config.holdout_fraction = sweep['holdout_fraction']
          print(f'== tuning {model} {method} {ratio:g}x lr {lr:g}',
                flush=True)
          train_and_save(config, workdir, path, budget, method)


def decay_sweep_config(tuning, plan, runs_dir, method, workdir, dataset=None,
                       score_decay=None, retrain_dense=False):
  """The config of a run in the decay sweep's setting (`plan.DECAY_SWEEP`):
  on the validation split, from the dense model of the learning-rate sweep
  at that ratio (``tuning``), in ``workdir``."""
  s = plan_lib.DECAY_SWEEP
  first_lr = plan_lib.sweep_dense_lr(tuning, s['model'], s['ratio'])
  dense_from = dense_models.dense_source(
      plan_lib.sweep_workdir(runs_dir, s['model'], s['ratio'], 'gsm',
                             first_lr),
      f"{s['model']} decay sweep",
      f"the GSM sweep at {s['ratio']:g}x, lr {first_lr:g},", retrain_dense,
      workdir)
  config = plan_lib.make_config(
      s['model'], plan[s['model']], method, s['ratio'], s['seed'],
      dense_from, dataset, lottery=False, learning_rate=s['learning_rate'],
      score_decay=score_decay)
  config.holdout_fraction = s['holdout_fraction']
  return config


def run_decay_sweep(tuning, plan, results_dir, runs_dir, dataset=None,
                    decays=plan_lib.SCORE_DECAYS, retrain_dense=False):
  """The smoothed ranking's decays (`plan.SCORE_DECAYS`) on validation, at
  `plan.DECAY_SWEEP` (`decay_sweep_config`); writes
  ``tuning/decay/*.json``, skipping points run."""
  s = plan_lib.DECAY_SWEEP
  for decay in decays:
    path = plan_lib.decay_path(results_dir, decay)
    if os.path.exists(path):
      continue
    workdir = os.path.join(
        plan_lib.sweep_dir(runs_dir, s['model'], s['ratio']),
        f'gsm_smoothed_d{decay:g}')
    config = decay_sweep_config(tuning, plan, runs_dir, 'gsm_smoothed',
                                workdir, dataset, decay, retrain_dense)
    print(f"== decay sweep {s['model']} {s['ratio']:g}x decay {decay:g}",
          flush=True)
    train_and_save(config, workdir, path, plan[s['model']], 'gsm_smoothed')


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--models', default=None,
                      help='comma-separated subset, e.g. lenet300')
  parser.add_argument('--part', choices=('all', 'decay', 'tuning',
                                          'comparison'),
                      default='all',
                      help='the smoothed ranking\'s decay sweep, the '
                      'learning-rate sweep, the comparison, or all three')
  parser.add_argument('--score-decays', default=None,
                      help='comma-separated subset of the decay sweep')
  parser.add_argument('--learning-rate-of', default=None,
                      help='METHOD=OTHER: METHOD trains at OTHER\'s best lr '
                      '(e.g. gsm_smoothed=gsm, to skip its sweep)')
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
  parser.add_argument('--retrain-missing-dense', action='store_true',
                      help='train a dense model again (same seed) where '
                      'the run that trained it kept its result but not its '
                      'workdir')
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
  lr_from = dict([args.learning_rate_of.split('=')]) if (
      args.learning_rate_of) else None
  decays = plan_lib.SCORE_DECAYS_QUICK if args.quick else plan_lib.SCORE_DECAYS
  def tuning(method):
    return {m: t for m, t in plan_lib.tuning_for(method, args.quick).items()
            if m in plan}

  # The smoothed variant's decay is chosen first, from the dense model of
  # GSM's sweep; then its learning rate.
  smoothed = [m for m in methods if m == 'gsm_smoothed']
  others = [m for m in methods if m != 'gsm_smoothed']
  if args.part in ('all', 'tuning'):
    run_tuning(tuning('gsm'), plan, results_dir, runs_dir, args.dataset,
               others, learning_rates, ratios, args.retrain_missing_dense,
               decays)
  if args.part in ('all', 'decay') and smoothed:
    run_decay_sweep(tuning('gsm'), plan, results_dir, runs_dir, args.dataset,
                    [float(d) for d in args.score_decays.split(',')]
                    if args.score_decays else decays,
                    args.retrain_missing_dense)
  if args.part in ('all', 'tuning') and smoothed:
    run_tuning(tuning('gsm_smoothed'), plan, results_dir, runs_dir,
               args.dataset, smoothed, learning_rates, ratios,
               args.retrain_missing_dense, decays, tuning('gsm'))
  if args.part in ('all', 'comparison'):
    run_all(plan, results_dir, runs_dir, args.dataset, seeds, ratios,
            methods, not args.no_lottery, tuning, lr_from,
            args.retrain_missing_dense, decays)
  full = not args.quick and args.results is None
  report.write(results_dir, plan_lib.QUICK if args.quick else plan_lib.FULL,
               md_path=os.path.join(benchmarks_dir, 'RESULTS.md') if full
               else None,
               speed_dir=os.path.join(benchmarks_dir, 'results', 'speed')
               if full else None)


if __name__ == '__main__':
  main()
