"""GSM against the pruning methods users would pick instead, on real data.

Usage:
  python -m benchmarks.accuracy.run            # the full comparison (hours on 2 CPUs)
  python -m benchmarks.accuracy.run --quick    # minutes: the harness, end to end
  python -m benchmarks.accuracy.run --part tuning   # only the learning-rate sweep
  python -m benchmarks.accuracy.run --models lenet5 --seeds 1 --ratios 125,300
                                      # a slice, e.g. one of two workers

For each model and seed, one dense model is trained (inside the first GSM
run); every method then starts from it with the same epochs and learning-rate
schedule; the methods are the records of `methods` (GSM, one-shot global
magnitude pruning + fine-tuning (Han et al. 2015), gradual magnitude
pruning with the cubic schedule (Zhu & Gupta 2017, global ranking), ...).
The peak lr is the config's, except at a ratio in the method's
learning-rate sweeps (run first, on a validation split), where each method
takes its own best there; a method's hyperparameter chosen on validation
(`methods.Choice`) is chosen before its lr sweep. Lottery tickets (paper Table 4) are
retrained from the initial weights in the GSM runs at the ratios of
``LOTTERY``. Every run writes
``benchmarks/results/accuracy/<model>_<method>_r<ratio>_s<seed>.json``; a run whose
result exists at the lr chosen is skipped, so an interrupted benchmark
resumes. At the end `report` writes the generated part of benchmarks/RESULTS.md and
the figures from all results.
"""

import argparse
import concurrent.futures
import multiprocessing
import os

from benchmarks.accuracy import dense_models
from benchmarks.accuracy import plan as plan_lib
from benchmarks.accuracy import report
from benchmarks.accuracy import results as results_lib
from benchmarks.accuracy import runs as runs_lib
from benchmarks.accuracy.methods import METHODS


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
  results_lib.write_result(path, summary)


def run_config(run, plan, dataset=None, retrain_dense=False):
  """The config of ``run`` (its dense source resolved now: an earlier run
  of the same loop may have trained it)."""
  dense_from = '' if run.dense is None else dense_models.dense_source(
      *run.dense, retrain=retrain_dense, workdir=run.workdir)
  config = plan_lib.make_config(
      run.model, plan[run.model], run.method, run.ratio, run.seed,
      dense_from, dataset, run.lottery, learning_rate=run.learning_rate,
      overrides=run.overrides)
  config.holdout_fraction = run.holdout_fraction
  return config


def train_run(run, plan, dataset=None, retrain_dense=False):
  """Trains ``run`` and writes its result."""
  config = run_config(run, plan, dataset, retrain_dense)
  print(f'== {run.title}', flush=True)
  train_and_save(config, run.workdir, run.path, plan[run.model], run.method,
                 **run.fields)


def run_each(runs, plan, dataset=None, retrain_dense=False, pool=None):
  """The one run loop: trains each of ``runs`` whose result is not there
  yet at its lr (so an interrupted benchmark resumes) and writes it.

  With ``pool`` (a `concurrent.futures.Executor`, see `worker_pool`) the
  runs that train a dense model go first, side by side, then the others;
  with ``retrain_dense``, so does one run per dense model that is missing
  (the others of its seed then start from it, not each from its own).
  """
  todo = [r for r in runs if not results_lib.has_result(
      r.path, r.learning_rate, plan_lib.default_learning_rate(r.model))]
  if pool is None:
    for run in todo:
      train_run(run, plan, dataset, retrain_dense)
    return
  first = [r for r in todo if r.dense is None]
  if retrain_dense:  # one run per missing dense model trains it, first
    missing = {}
    for r in todo:
      if r.dense is not None and dense_models.find_dense(r.dense[0]) is None:
        missing.setdefault(r.dense[0], r)
    first += missing.values()
  for batch in (first, [r for r in todo if r not in first]):
    for future in [pool.submit(train_run, r, plan, dataset, retrain_dense)
                   for r in batch]:
      future.result()  # a failed run raises here


def quick_compilation(cache_dir):
  """--quick's runs are a few steps each, so compiling is most of their
  time: they compile with XLA's optimizations off and share their
  compiled programs through JAX's persistent cache in ``cache_dir``: runs
  whose programs are the same reuse them. The peak lr is optimizer state,
  not a constant of the step (`examples.paper.phases.peak_in_state`), and
  `plan.QUICK`'s batch size gives the sweeps' smaller training split the
  same steps per epoch, so a method's sweep and comparison runs share one
  program (measured in benchmarks/README.md)."""
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update('jax_disable_most_optimizations', True)
  jax.config.update('jax_compilation_cache_dir', cache_dir)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def worker_pool(jobs, quick_cache=None):
  """``jobs`` worker processes (spawned: JAX does not fork), or None for
  one: the runs of `run_each` are independent once their dense models
  exist. With ``quick_cache`` (a directory) they compile as
  `quick_compilation` says."""
  if jobs <= 1:
    return None
  return concurrent.futures.ProcessPoolExecutor(
      jobs, mp_context=multiprocessing.get_context('spawn'),
      initializer=quick_compilation if quick_cache else None,
      initargs=(quick_cache,) if quick_cache else ())


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--models', default=None,
                      help='comma-separated subset, e.g. lenet300')
  parser.add_argument('--part', choices=('all', 'choices', 'tuning',
                                          'comparison'),
                      default='all',
                      help='the sweeps of a hyperparameter chosen before the '
                      'lr (the smoothed ranking\'s decay), the learning-rate '
                      'sweep, the comparison, or all three')
  parser.add_argument('--choice-values', default=None,
                      help='comma-separated subset of the values of the '
                      'methods\' chosen hyperparameter, e.g. 0.9,0.99')
  parser.add_argument('--learning-rate-of', default=None,
                      help='METHOD=OTHER: METHOD trains at OTHER\'s best lr '
                      '(e.g. gsm_smoothed=gsm, to skip its sweep)')
  parser.add_argument('--seeds', default=None,
                      help='comma-separated subset of the seeds, e.g. 1,2')
  parser.add_argument('--ratios', default=None,
                      help='comma-separated subset of the ratios (of the '
                      'comparison, or of the sweeps with --part tuning), '
                      'e.g. 125')
  parser.add_argument('--methods', default=None,
                      help='comma-separated subset of ' + ', '.join(METHODS)
                      + ' (default: all; with --quick, those it runs)')
  parser.add_argument('--learning-rates', default=None,
                      help='comma-separated subset of the sweep (--part '
                      'tuning), e.g. 0.01')
  parser.add_argument('--retrain-missing-dense', action='store_true',
                      help='train a dense model again (same seed) where '
                      'the run that trained it kept its result but not its '
                      'workdir')
  parser.add_argument('--jobs', type=int, default=1,
                      help='runs trained side by side, in this many worker '
                      'processes (e.g. 2 on a 2-core machine)')
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
  floats = lambda text: text and [float(x) for x in text.split(',')]
  methods = args.methods.split(',') if args.methods else [
      m for m in METHODS if METHODS[m].quick or not args.quick]
  if set(methods) - set(METHODS):
    parser.error(f'--methods: unknown {set(methods) - set(METHODS)}; '
                 f'choose from {tuple(METHODS)}.')
  values = {m: floats(args.choice_values) for m in methods
            if METHODS[m].choice and args.choice_values}
  lr_from = dict([args.learning_rate_of.split('=')]) if (
      args.learning_rate_of) else None
  quick_cache = os.path.join(runs_dir, 'compilation_cache') if (
      args.quick) else None
  if quick_cache:
    quick_compilation(quick_cache)
  pool = worker_pool(args.jobs, quick_cache)
  loop = lambda runs: run_each(runs, plan, args.dataset,
                               args.retrain_missing_dense, pool)

  # A method with a `methods.Choice` chooses it first, from the dense model
  # of GSM's sweep; then its learning rate.
  plain = [m for m in methods if not METHODS[m].choice]
  with_choice = [m for m in methods if METHODS[m].choice]
  if args.part in ('all', 'tuning'):
    loop(runs_lib.tuning_runs(plan, results_dir, runs_dir, plain,
                     floats(args.learning_rates), floats(args.ratios),
                     args.quick))
  if args.part in ('all', 'choices'):
    loop([runs_lib.choice_run(m, v, results_dir, runs_dir, args.quick)
          for m in with_choice if METHODS[m].choice.model in plan
          for v in (values.get(m) or
                    METHODS[m].choice.sweep_values(args.quick))])
  if args.part in ('all', 'tuning'):
    loop(runs_lib.tuning_runs(plan, results_dir, runs_dir, with_choice,
                     floats(args.learning_rates), floats(args.ratios),
                     args.quick, values))
  if args.part in ('all', 'comparison'):
    loop(runs_lib.comparison_runs(plan, results_dir, runs_dir,
                         args.seeds and [int(s) for s in args.seeds.split(',')],
                         floats(args.ratios), methods, not args.no_lottery,
                         args.quick, lr_from, values))
  if pool is not None:
    pool.shutdown()
  full = not args.quick and args.results is None
  report.write(results_dir, plan_lib.QUICK if args.quick else plan_lib.FULL,
               md_path=os.path.join(benchmarks_dir, 'RESULTS.md') if full
               else None,
               speed_dir=os.path.join(benchmarks_dir, 'results', 'speed')
               if full else None)


if __name__ == '__main__':
  main()
