"""The final prune at the paper's own settings: what it costs, what fixes it.

Usage:
  python -m benchmarks.accuracy.paper_protocol --model lenet300 --seeds 0,1,2
  python -m benchmarks.accuracy.paper_protocol --model lenet5 --seeds 0 \
      --variants paper,recipe
  python -m benchmarks.accuracy.paper_protocol --report  # the tables

Each run is the paper's protocol, unshortened (``examples/paper/configs/
lenet300_paper.py``, ``lenet5_paper.py``): a dense base, then GSM; a
variant changes only how GSM ranks or decays (``VARIANTS``). The paper's
rule trains the seed's dense model; every other variant starts from it.
Every run writes
``benchmarks/results/paper_protocol/<model>_r<ratio>_<variant>_s<seed>.json``
(the run's report, and the per-epoch churn and prune share of its GSM
phase); a run whose result exists is skipped.
"""

import argparse
import json
import os
import statistics

from benchmarks.accuracy import results as results_lib

RESULTS_DIR = os.path.join(os.path.dirname(__file__), '..', 'results',
                           'paper_protocol')
RUNS_DIR = os.path.join('runs', 'paper_protocol')
CONFIGS = {'lenet300': 'lenet300_paper', 'lenet5': 'lenet5_paper'}

# name -> (label, config overrides of the GSM phase). The first lr drop is
# at epoch 160 of the GSM phase (155 after the 5-epoch warm-up).
VARIANTS = {
    'paper': ("the paper's rule", {}),
    'decay_0.9': ('score_decay 0.9', {'score_decay': 0.9}),
    'decay_0.99': ('score_decay 0.99', {'score_decay': 0.99}),
    'decay_0.999': ('score_decay 0.999', {'score_decay': 0.999}),
    'frozen': ('ranking frozen at the first lr drop',
               {'freeze_ranking_epoch': 155}),
    'passive_1e-3': ('passive_decay 1e-3', {'passive_decay': 1e-3}),
    'recipe': ('score_decay 0.99 + passive_decay 1e-3',
               {'score_decay': 0.99, 'passive_decay': 1e-3}),
}


def config_for(model, variant, seed, dataset=None):
  """The paper-protocol config of one run."""
  import importlib  # pylint: disable=import-outside-toplevel
  config = importlib.import_module(
      f'examples.paper.configs.{CONFIGS[model]}').get_config()
  config.seed = seed
  if dataset:
    config.dataset = dataset
  for key, value in VARIANTS[variant][1].items():
    config.gsm[key] = value
  return config


def workdir_for(model, ratio, variant, seed):
  return os.path.join(RUNS_DIR, f'{model}_r{ratio:g}', f's{seed}', variant)


def result_path(results_dir, model, ratio, variant, seed):
  return os.path.join(results_dir, f'{model}_r{ratio:g}_{variant}_s{seed}.json')


def run(model, seeds, variants, results_dir=RESULTS_DIR, dataset=None):
  """Trains every (seed, variant) without a result; the paper's rule of a
  seed first, since it trains the dense model the others start from (if
  its workdir is gone, the seed's first run to train trains it again)."""
  from examples.paper import train  # pylint: disable=import-outside-toplevel
  os.makedirs(results_dir, exist_ok=True)
  order = ['paper'] + [v for v in variants if v != 'paper']
  for seed in seeds:
    source = None  # the workdir holding this seed's dense model
    for variant in order:
      config = config_for(model, variant, seed, dataset)
      path = result_path(results_dir, model, config.ratio, variant, seed)
      workdir = workdir_for(model, config.ratio, variant, seed)
      if os.path.exists(os.path.join(workdir, 'phase_results.json')):
        source = source or workdir
      if variant not in variants or os.path.exists(path):
        continue
      if source:
        config.dense_from = source
      else:  # the paper's run is done but its workdir is gone: this run
        source = workdir  # trains the dense model (one thread: the same)
      print(f'== {model} {variant} seed {seed}', flush=True)
      summary = train.train_and_evaluate(config, workdir)
      summary.update(seed=seed, variant=variant,
                     curves=results_lib.pruning_phase_curves(workdir, 'gsm'))
      with open(path, 'w') as f:
        json.dump(summary, f, indent=1)


def load(results_dir=RESULTS_DIR):
  """Every result; the per-epoch curves under ``'curves'``."""
  runs = []
  for name in sorted(os.listdir(results_dir)) if os.path.isdir(
      results_dir) else []:
    if name.endswith('.json'):
      with open(os.path.join(results_dir, name)) as f:
        run_ = json.load(f)
      if isinstance(run_.get('pruned_norm_share'), list):  # the first runs
        run_['curves'] = {k: run_.pop(k) for k in ('entered_per_step',
                                                   'pruned_norm_share')}
        # The last epoch's share is the one the report's check saw.
        run_['pruned_norm_share'] = run_['curves']['pruned_norm_share'][-1]
      runs.append(run_)
  return runs


def _stat(values, scale=100.0, digits=2):
  values = [v for v in values if v is not None]
  if not values:
    return 'n/a'
  mean = statistics.mean(values) * scale
  if len(values) == 1:
    return f'{mean:.{digits}f}'
  return f'{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}'


def default_tolerance():
  import inspect  # pylint: disable=import-outside-toplevel

  import gsm_optax  # pylint: disable=import-outside-toplevel
  return inspect.signature(
      gsm_optax.check_final_prune).parameters['tolerance'].default


def table_lines(runs, model):
  """One row per variant: accuracy before and after the prune, the prune's
  cost, the share of the kernels' norm it removed, the churn of the last
  epoch, the share of the held-out predictions the prune changed (runs that
  recorded it), whether `check_final_prune` warns at its default
  tolerances, and the per-layer densities
  (means over seeds)."""
  rows = [r for r in runs if r['model'] == model]
  if not rows:
    return []
  tolerance = default_tolerance()
  lines = ['| variant | seeds | before the prune | after | cost (points) | '
           'norm share removed | churn, last epoch (% of Q a step) | '
           'predictions changed (%) | warns (default tolerance) | '
           'kept by last mask | per-layer density (%) |',
           '|---|---:|---|---|---|---|---|---|---|---|---|']
  for variant, (label, _) in VARIANTS.items():
    done = [r for r in rows if r['variant'] == variant]
    if not done:
      continue
    costs = [r['accuracy_before_prune'] - r['pruned_accuracy'] for r in done]
    churn = [r['curves']['entered_per_step'][-1] / r['kept_weights']
             for r in done if r['curves'].get('entered_per_step')]
    # Whether check_final_prune warns at its default tolerances: by the
    # predictions the prune changes on held-out inputs where the run
    # recorded them (its message), else by the share of the norm it
    # measured at the end of the run.
    fired = sum(bool(r['prune_warning']) if 'predictions_changed' in r else
                not r['pruned_norm_share'] <= tolerance for r in done)
    changed = [r['predictions_changed'] for r in done
               if r.get('predictions_changed') is not None]
    layers = [l['path'] for l in done[0]['sparsity']['leaves']
              if l['prunable']]
    density = ', '.join(
        f"{statistics.mean(next(l['density'] for l in r['sparsity']['leaves'] if l['path'] == p) for r in done) * 100:.1f}"
        for p in layers)
    lines.append(
        f"| {label} | {len(done)} | {_stat([r['accuracy_before_prune'] for r in done])} | "
        f"{_stat([r['pruned_accuracy'] for r in done])} | {_stat(costs)} | "
        f"{_stat([r['pruned_norm_share'] for r in done], 1, 3)} | "
        f"{_stat(churn, 100, 2) if churn else 'n/a'} | "
        f"{_stat(changed, 100, 2) if len(changed) == len(done) else 'n/a'} | "
        f"{fired} of {len(done)} | "
        f"{_stat([r.get('last_mask_accuracy') for r in done])} | {density} |")
  return lines


def report_lines(results_dir=RESULTS_DIR):
  runs = load(results_dir)
  lines = []
  for model in CONFIGS:
    table = table_lines(runs, model)
    if table:
      ratio = next(r['ratio'] for r in runs if r['model'] == model)
      dense = _stat(sorted({r['seed']: r['dense_accuracy'] for r in runs
                            if r['model'] == model}.values()))
      lines += [f'{model} at {ratio:g}×, dense {dense}:', ''] + table + ['']
  return lines


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', choices=sorted(CONFIGS), default='lenet300')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--variants', default=','.join(VARIANTS))
  parser.add_argument('--dataset', default=None,
                      help="e.g. 'mnist' (the paper's); default Fashion-MNIST")
  parser.add_argument('--results', default=RESULTS_DIR)
  parser.add_argument('--report', action='store_true',
                      help='print the tables of the results so far')
  args = parser.parse_args()
  if args.report:
    print('\n'.join(report_lines(args.results)))
    return
  variants = args.variants.split(',')
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown:
    parser.error(f'unknown variants {unknown}; known: {sorted(VARIANTS)}')
  run(args.model, [int(s) for s in args.seeds.split(',')], variants,
      args.results, args.dataset)


if __name__ == '__main__':
  main()
