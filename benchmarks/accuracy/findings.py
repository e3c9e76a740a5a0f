"""Plain statements computed from the accuracy tables: where each GSM
method wins or loses against dense and the best baseline, what the final
prune costs it, where it diverged. Rendering only, like `report` (which
puts these lines in RESULTS.md)."""

import statistics

from benchmarks.accuracy import churn_report
from benchmarks.accuracy import methods as methods_lib
from benchmarks.accuracy import results as results_lib
from benchmarks.accuracy import sweep_report
from benchmarks.accuracy.methods import label
from benchmarks.accuracy.methods import METHODS


def gsm_methods(variants=False):
  """The GSM methods (`methods.Method.kind`): the main ones, or with
  ``variants`` every one."""
  return tuple(m.name for m in METHODS.values() if m.kind == 'gsm' and
               (variants or m.variant_of is None))


def divergence_lines(results, tuning, default_lr):
  """Where a GSM method diverged in the comparison: its lr, and the
  sweep's run."""
  by_point = {(r['model'], r['ratio'], r['method'], r['learning_rate']): r
              for r in tuning}
  lines = []
  for model, ratio, method, lr in sorted({
      (r['model'], r['ratio'], r['method'],
       results_lib.learning_rate_of(r, default_lr))
      for r in results if r['method'] in gsm_methods()
      and results_lib.diverged(r)}):
    name = label(method)
    text = f'- {model} {ratio:g}×: {name} at lr {lr:g}'
    swept = by_point.get((model, ratio, method, lr))
    if swept is not None:
      text += (', its best on validation at this ratio. The sweep\'s run (seed '
               f"{swept['seed']}, 5/6 of the training set) "
               + ('diverged too.' if results_lib.diverged(swept) else
                  f"did not diverge: {100 * swept['pruned_accuracy']:.2f}% "
                  'on validation after the prune. This lr is at the edge of '
                  f'what {name} trains stably at this ratio.'))
    else:
      text += ' (no sweep at this ratio).'
    lines.append(text)
  return lines


def row_findings(model, ratio, row, names):
  """The statements of one table row: each main GSM method against dense
  and the best baseline, and its variants against it."""
  lines = []
  baselines = {m: row[m][0] for m in names
               if METHODS[m].kind == 'baseline' and row[m] is not None}
  best = max(baselines, key=baselines.get) if baselines else None
  for method in (m for m in gsm_methods() if m in names):
    failed = row['diverged'][method]
    if failed:
      lines.append(f'- {model} {ratio:g}×: {label(method)} diverged '
                   '(non-finite loss and weights) in '
                   f"{failed} of {results_lib.num_runs(row[method], failed)}"
                   ' seeds; the means leave those runs out.')
    if row[method] is None:
      continue
    mean = row[method][0]
    text = (f'- {model} {ratio:g}×: {label(method)} {mean:.2f}%, '
            f"{mean - row['dense'][0]:+.2f} points vs dense")
    if best:
      gap = mean - baselines[best]
      text += (f"; {'beats' if gap > 0 else 'loses to'} the best baseline "
               f'({label(best)}, {baselines[best]:.2f}%) by {abs(gap):.2f} '
               'points')
    for variant in (m for m in names if METHODS[m].variant_of == method):
      if row[variant] is None:
        continue
      v = row[variant]
      spread = (f"seeds' std {max(row[method][1], v[1]):.2f}"
                if min(row[method][2], v[2]) > 1 else 'one seed')
      text += (f'; {label(variant)} {v[0]:.2f}% ({v[0] - mean:+.2f} vs '
               f'{label(method)}, {spread}'
               + (f', {v[0] - baselines[best]:+.2f} vs {label(best)}'
                  if best else '') + ')')
    lines.append(text + '.')
  return lines


def findings_lines(results, plan, tuning=(), default_lr=0.03):
  """Plain statements: where GSM wins or loses, computed from the table."""
  lines = ['## Per-ratio summary (computed from the tables)', '']
  for model in sorted({r['model'] for r in results}):
    for axis in results_lib.axes(results, model):
      for ratio, row in results_lib.accuracy_table(results, model,
                                                   axis).items():
        lines += row_findings(model, ratio, row, methods_lib.on_axis(axis))
  gsm = [r for r in results if r['method'] in gsm_methods(variants=True)
         and not results_lib.diverged(r)
         and r.get('accuracy_before_prune') is not None]
  if gsm:
    lines += ['', 'What the final prune costs GSM (accuracy before it minus '
              'after it, in points):', '']
    for method in gsm_methods(variants=True):
      runs = [r for r in gsm if r['method'] == method]
      for model in sorted({r['model'] for r in runs}):
        costs = [100 * (r['accuracy_before_prune'] - r['pruned_accuracy'])
                 for r in runs if r['model'] == model]
        epochs = next(r['epochs']['prune'] for r in runs
                      if r['model'] == model)
        lines.append(f'- {label(method)}, {model} ({epochs} pruning '
                     f'epochs): mean {statistics.mean(costs):+.2f}, largest '
                     f'{max(costs):+.2f} over {len(costs)} '
                     + ('runs.' if len(costs) > 1 else 'run.'))
    lines += churn_report.churn_lines(results)
    lines += ['', 'How far a never-active weight decays over the pruning '
              'phase, exp(-Σ lr·λ/(1-β)) with the runs\' schedule: '
              + ', '.join(f'e^-{results_lib.passive_decay_exponent(m, plan[m]):.1f} '
                          f'for {m}' for m in sorted({r['model'] for r in gsm})
                          if m in plan) + '.']
    if tuning:
      lines += ['', 'Each method trains at its best lr on validation at every '
                'swept ratio' + sweep_report.stale_lr_text(results, tuning, default_lr)]
  if any(results_lib.diverged(r) for r in results):
    lines += ['', 'Where GSM diverged:', ''] + divergence_lines(
        results, tuning, default_lr)
  return lines + ['']
