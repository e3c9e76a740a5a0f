"""The accuracy results as data: loading, aggregation, and the decisions
made from them (which runs are invalid or diverged, each method's best
learning rate). No rendering here: see `report` and `figures`."""

import glob
import json
import os
import statistics

import numpy as np

from benchmarks.accuracy import methods as methods_lib
from benchmarks.accuracy import plan as plan_lib
from benchmarks.accuracy.methods import label
from benchmarks.accuracy.methods import METHODS


def load(results_dir):
  """Valid accuracy results (one dict per run).

  See `invalid`: runs that break the method's own invariant are left out.
  """
  return [r for r in load_all(results_dir) if not invalid(r)]


def load_all(results_dir):
  return [json.load(open(p))
          for p in sorted(glob.glob(os.path.join(results_dir, '*.json')))]


def invalid(run):
  """Why a run cannot be used, or ''. A method that holds its weights at
  the final mask (`methods.Method.holds_final_mask`: gradual magnitude,
  magnitude + FT) must not have its accuracy changed by the final prune;
  if it does, the run never reached its sparsity and its number would be a
  one-shot prune of a denser model."""
  if (METHODS[run['method']].holds_final_mask and
      run.get('accuracy_before_prune') is not None and
      run['accuracy_before_prune'] != run['pruned_accuracy']):
    return (f"{run['model']} {label(run['method'])} "
            f"{run['ratio']:g}× seed {run['seed']}: accuracy "
            f"{100 * run['accuracy_before_prune']:.2f}% before the final "
            f"prune, {100 * run['pruned_accuracy']:.2f}% after; it did not "
            'reach its sparsity during training')
  return ''


def load_tuning(results_dir):
  """The learning-rate sweep (``results_dir/tuning/*.json``), if run."""
  return [json.load(open(p)) for p in
          sorted(glob.glob(os.path.join(results_dir, 'tuning', '*.json')))]


def load_diagnostics(results_dir):
  """Single runs that answer one question each
  (``results_dir/diagnostics/*.json``: a report plus its question, command
  and date)."""
  return [json.load(open(p)) for p in sorted(
      glob.glob(os.path.join(results_dir, 'diagnostics', '*.json')))]


def pruning_phase_curves(workdir, phase):
  """Per-epoch ``entered_per_step`` and ``pruned_norm_share`` of the
  pruning phase, from the run's ``metrics.jsonl`` (empty if not logged)."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(l) for l in f]
  return {key: [r[key] for r in records if r['phase'] == phase]
          for key in ('entered_per_step', 'pruned_norm_share')
          if any(key in r for r in records if r['phase'] == phase)}


def load_choice(results_dir, method):
  """The runs of ``method``'s `methods.Choice` sweep (if run), by value."""
  field = METHODS[method].choice.field
  return sorted((json.load(open(p)) for p in
                 glob.glob(plan_lib.choice_path(results_dir, method))),
                key=lambda r: r[field])


def chosen_value(results_dir, method, values):
  """The value of ``method``'s `methods.Choice`: the best on validation of
  its sweep over ``values`` (ties: the smaller value). Every point must have
  been run."""
  field = METHODS[method].choice.field
  points = []
  for value in values:
    path = plan_lib.choice_path(results_dir, method, value)
    if not os.path.exists(path):
      raise FileNotFoundError(
          f'{method} takes its {field} from its sweep on validation, and '
          f'{path} is missing; run --part choices first.')
    with open(path) as f:
      points.append(json.load(f))
  valid = [r for r in points if not diverged(r)]
  if not valid:
    raise ValueError(f'{method} diverged at every {field} of its sweep.')
  return max(valid, key=lambda r: (r['pruned_accuracy'],
                                   -r[field]))[field]


def best_learning_rates(tuning):
  """{(model, ratio, method): (best lr, its validation accuracy)}.

  Diverged points are never picked; of points with equal accuracy the
  smaller lr wins, whatever their order in ``tuning``.
  """
  best = {}
  for r in tuning:
    if diverged(r):
      continue
    key = (r['model'], r['ratio'], r['method'])
    if key not in best or ((r['pruned_accuracy'], -r['learning_rate']) >
                           (best[key][1], -best[key][0])):
      best[key] = (r['learning_rate'], r['pruned_accuracy'])
  return best


def learning_rate_of(run, default_lr):
  """The peak lr a result trained at; one without the field (written before
  it was recorded) ran at ``default_lr``, the config's."""
  return run.get('learning_rate', default_lr)


def learning_rates_used(results, default_lr):
  """{(model, ratio, method): sorted lrs of its comparison runs}."""
  used = {}
  for r in results:
    used.setdefault((r['model'], r['ratio'], r['method']), set()).add(
        learning_rate_of(r, default_lr))
  return {k: sorted(v) for k, v in used.items()}


def lr_exceptions(results, default_lr):
  """'lenet5 10×: GSM 0.01, …' for comparison runs not at ``default_lr``."""
  by_point = {}
  for (model, ratio, method), lrs in sorted(
      learning_rates_used(results, default_lr).items()):
    other = [lr for lr in lrs if lr != default_lr]
    if other:
      by_point.setdefault((model, ratio), []).append(
          f"{label(method)} {'/'.join(f'{lr:g}' for lr in other)}")
  return [f'{model} {ratio:g}×: ' + ', '.join(cells)
          for (model, ratio), cells in by_point.items()]


def mean_std(values):
  values = [v for v in values if v is not None]
  if not values:
    return None
  return (100 * statistics.mean(values),
          100 * statistics.stdev(values) if len(values) > 1 else 0.0,
          len(values))


def diverged(run):
  """Whether training diverged (non-finite parameters; see examples.paper.train)."""
  return bool(run.get('diverged'))


def axes(results, model):
  """The axes (`methods.AXES`) of ``model``'s results, in that order."""
  present = {METHODS[r['method']].axis for r in results
             if r['model'] == model}
  return [a for a in methods_lib.AXES if a in present]


def accuracy_table(results, model, axis='params'):
  """{ratio: {column: (mean, std, n)}} for one model and the methods on
  ``axis``, and under ``'diverged'`` {method: the number of its runs that
  diverged}, which the means leave out."""
  names = methods_lib.on_axis(axis)
  rows = {}
  for ratio in sorted({r['ratio'] for r in results if r['model'] == model
                       and r['method'] in names}):
    runs = [r for r in results if r['model'] == model and r['ratio'] == ratio
            and r['method'] in names]
    row = {'dense': mean_std({r['seed']: r['dense_accuracy']
                              for r in runs}.values()),
           'diverged': {}}
    for method in names:
      row[method] = mean_std([r['pruned_accuracy'] for r in runs
                              if r['method'] == method and not diverged(r)])
      row['diverged'][method] = sum(1 for r in runs if r['method'] == method
                                    and diverged(r))
    rows[ratio] = row
  return rows


def num_runs(stat, num_diverged):
  """All runs of a cell: those in its ``(mean, std, n)`` and the diverged."""
  return num_diverged + (stat[2] if stat else 0)


def passive_decay_exponent(model, budget, steps_per_epoch=60_000 // 256):
  """Σ_t lr_t·λ/(1-β) over the pruning phase of a ``benchmarks.accuracy.run``
  budget, with the schedule of the runs (`examples.paper.train`): a never-active
  weight ends at about exp(-this) of its start."""
  from examples.paper import phases  # pylint: disable=import-outside-toplevel
  g = plan_lib.make_config(model, budget, 'gsm', budget['ratios'][0], 0, '',
                      None).gsm
  schedule = phases.learning_rate_schedule(g, steps_per_epoch)
  lrs = schedule(np.arange(budget['prune_epochs'] * steps_per_epoch))
  return float(np.sum(np.asarray(lrs, np.float64))) * (
      g.weight_decay / (1 - g.momentum))


def has_result(path, learning_rate, default_lr):
  """Whether ``path`` holds a result trained at ``learning_rate`` (one
  without the field, written before it was recorded, ran at ``default_lr``)."""
  if not os.path.exists(path):
    return False
  with open(path) as f:
    return learning_rate_of(json.load(f), default_lr) == learning_rate


def write_result(path, result):
  """Writes a result JSON to a temporary name, then renames it."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path + '.tmp', 'w') as f:
    json.dump(result, f, indent=1)
  os.replace(path + '.tmp', path)


def comparison_learning_rate(tuning, results_dir, model, ratio, method):
  """The pruning lr of ``method`` at ``ratio`` in the comparison.

  The best on validation of the sweep at ``ratio`` when ``tuning`` holds
  one (every point must have been run), else the config's lr.
  """
  sweeps = [s for s in tuning.get(model, ()) if s['ratio'] == ratio]
  if not sweeps:
    return plan_lib.default_learning_rate(model)
  lrs = sweeps[0]['learning_rates']
  points = []
  for lr in lrs:
    path = plan_lib.tuning_path(results_dir, model, method, ratio, lr)
    if not os.path.exists(path):
      raise FileNotFoundError(
          f'{model} {method} at {ratio:g}x: the comparison takes its lr from '
          f'the sweep, and {path} is missing; run --part tuning first.')
    with open(path) as f:
      points.append(json.load(f))
  best = best_learning_rates(points).get((model, ratio, method))
  if best is None:
    raise ValueError(f'{model} {method} at {ratio:g}x diverged at every lr '
                     f'of the sweep {lrs}; widen it.')
  return best[0]
