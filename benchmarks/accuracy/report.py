"""RESULTS.md from the accuracy results: tables and plain statements.

Rendering only: the data and the decisions come from `results`, the figures
from `figures`. The hand-written findings at the top of RESULTS.md (above
`MARKER`) are kept as they are; everything below it is generated.
"""

import datetime
import os
import platform
import statistics

from benchmarks.accuracy import churn_report
from benchmarks.accuracy import figures
from benchmarks.accuracy import plan as plan_lib
from benchmarks.accuracy import results as results_lib
from benchmarks.accuracy import sweep_report
from benchmarks.accuracy.results import METHOD_NAMES
from benchmarks.speed import report as speed_report


def diagnostics_lines(results_dir):
  """Markdown for single runs that answer one question each
  (``results_dir/diagnostics/*.json``: a report plus its question, command
  and date)."""
  runs = results_lib.load_diagnostics(results_dir)
  if not runs:
    return []
  lines = ['## Diagnostics', '']
  for r in runs:
    lines += [f"**{r['question']}** ({r['date']})", '',
              f"`{r['command']}`", '',
              f"{r['model']} {r['method']} at {r['ratio']:g}×, on "
              f"{r['evaluated_on']}: dense {100 * r['dense_accuracy']:.2f}%, "
              f"before the prune {100 * r['accuracy_before_prune']:.2f}%, "
              f"after it {100 * r['pruned_accuracy']:.2f}%; final training "
              f"accuracy {100 * r['final_train_accuracy']:.2f}%."
              + (' Training loss by epoch of the pruning phase: ' +
                 ', '.join(f'{x:.3f}' for x in r['loss_by_epoch']) + '.'
                 if 'loss_by_epoch' in r else ''), '']
  return lines


def fmt(stat, with_n=True):
  """``mean ± std (n=k)``, or without ``(n=k)`` when ``with_n`` is False."""
  if stat is None:
    return '–'
  mean, std, n = stat
  if n == 1:
    return f'{mean:.2f} (n=1)'
  return f'{mean:.2f} ± {std:.2f}' + (f' (n={n})' if with_n else '')


def fmt_cell(stat, num_diverged, with_n=True):
  """A table cell: mean ± std (n), and how many runs diverged."""
  if not num_diverged:
    return fmt(stat, with_n)
  text = f'diverged in {num_diverged} of {results_lib.num_runs(stat, num_diverged)}'
  return f'{fmt(stat, with_n)}; {text}' if stat else text


def accuracy_table_lines(results, model, with_n=True):
  """The accuracy-vs-ratio table of ``model`` as Markdown lines, the best
  pruning method's mean in bold. ``with_n=False`` leaves out the ``(n=k)``:
  the form the README quotes (``tests/test_readme.py`` checks it)."""
  columns = ('dense',) + tuple(METHOD_NAMES)
  lines = ['| ratio | dense | ' + ' | '.join(METHOD_NAMES.values()) + ' |',
           '|---:|' + '---|' * len(columns)]
  for ratio, row in results_lib.accuracy_table(results, model).items():
    means = {c: row[c][0] for c in METHOD_NAMES if row[c] is not None}
    best = max(means, key=means.get) if means else None
    cells = []
    for c in columns:
      cell = fmt_cell(row[c], row['diverged'].get(c), with_n)
      cells.append(f'**{cell}**' if c == best else cell)
    lines.append(f'| {ratio:g}× | ' + ' | '.join(cells) + ' |')
  return lines


def divergence_lines(results, tuning, default_lr):
  """Where GSM diverged in the comparison: its lr, and the sweep's run."""
  by_point = {(r['model'], r['ratio'], r['method'], r['learning_rate']): r
              for r in tuning}
  lines = []
  for model, ratio, lr in sorted({
      (r['model'], r['ratio'], results_lib.learning_rate_of(r, default_lr))
      for r in results if r['method'] == 'gsm' and results_lib.diverged(r)}):
    text = f'- {model} {ratio:g}×: GSM at lr {lr:g}'
    swept = by_point.get((model, ratio, 'gsm', lr))
    if swept is not None:
      text += (', its best on validation at this ratio. The sweep\'s run (seed '
               f"{swept['seed']}, 5/6 of the training set) "
               + ('diverged too.' if results_lib.diverged(swept) else
                  f"did not diverge: {100 * swept['pruned_accuracy']:.2f}% "
                  'on validation after the prune. This lr is at the edge of '
                  'what GSM trains stably at this ratio.'))
    else:
      text += ' (no sweep at this ratio).'
    lines.append(text)
  return lines


def findings_lines(results, plan, tuning=(), default_lr=0.03):
  """Plain statements: where GSM wins or loses, computed from the table."""
  lines = ['## Per-ratio summary (computed from the tables)', '']
  for model in sorted({r['model'] for r in results}):
    for ratio, row in results_lib.accuracy_table(results, model).items():
      failed = row['diverged']['gsm']
      if failed:
        lines.append(f'- {model} {ratio:g}×: GSM diverged (non-finite loss '
                     f"and weights) in {failed} of {results_lib.num_runs(row['gsm'], failed)}"
                     ' seeds; the means leave those runs out.')
      if row['gsm'] is None:
        continue
      baselines = {m: row[m][0] for m in ('magnitude_ft', 'gradual_magnitude')
                   if row[m] is not None}
      best = max(baselines, key=baselines.get) if baselines else None
      text = (f"- {model} {ratio:g}×: GSM {row['gsm'][0]:.2f}%, "
              f"{row['gsm'][0] - row['dense'][0]:+.2f} points vs dense")
      if best:
        gap = row['gsm'][0] - baselines[best]
        verdict = 'beats' if gap > 0 else 'loses to'
        text += (f"; {verdict} the best baseline ({METHOD_NAMES[best]}, "
                 f"{baselines[best]:.2f}%) by {abs(gap):.2f} points")
      smoothed = row.get('gsm_smoothed')
      if smoothed is not None:
        text += (f"; smoothed {smoothed[0]:.2f}% ({smoothed[0] - row['gsm'][0]:+.2f} "
                 "vs the paper's rule, seeds' std "
                 f"{max(row['gsm'][1], smoothed[1]):.2f}"
                 + (f', {smoothed[0] - baselines[best]:+.2f} vs '
                    f'{METHOD_NAMES[best]}' if best else '') + ')')
      lines.append(text + '.')
  gsm = [r for r in results if r['method'] == 'gsm' and not results_lib.diverged(r)
         and r.get('accuracy_before_prune') is not None]
  if gsm:
    lines += ['', 'What the final prune costs GSM (accuracy before it minus '
              'after it, in points):', '']
    for method in ('gsm', 'gsm_smoothed'):
      runs = [r for r in results if r['method'] == method and
              not results_lib.diverged(r) and
              r.get('accuracy_before_prune') is not None]
      for model in sorted({r['model'] for r in runs}):
        costs = [100 * (r['accuracy_before_prune'] - r['pruned_accuracy'])
                 for r in runs if r['model'] == model]
        epochs = next(r['epochs']['prune'] for r in runs
                      if r['model'] == model)
        lines.append(f'- {METHOD_NAMES[method]}, {model} ({epochs} pruning '
                     f'epochs): mean {statistics.mean(costs):+.2f}, largest '
                     f'{max(costs):+.2f} over {len(costs)} runs.')
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


MARKER = ('<!-- Generated below by `python -m benchmarks.accuracy.run` from '
          'the JSON results; write findings above this line. -->')


def write(results_dir, plan, md_path=None, speed_dir=None):
  """Writes the generated part of ``md_path`` and the PNG figures.

  Args:
    results_dir: the accuracy results (JSON), where the figures go too.
    plan: the plan that produced them (`plan.FULL` or `plan.QUICK`).
    md_path: the Markdown file; default ``RESULTS_<results_dir name>.md``
      beside ``results_dir``. What stands above `MARKER` in it is kept.
    speed_dir: the speed benchmarks' JSON files, whose tables are added.

  Returns:
    ``md_path``.
  """
  every_run = results_lib.load_all(results_dir)
  results = [r for r in every_run if not results_lib.invalid(r)]
  results_dir = os.path.abspath(results_dir)
  if md_path is None:
    md_path = os.path.join(os.path.dirname(results_dir),
                           f'RESULTS_{os.path.basename(results_dir)}.md')
  if not results:
    return md_path
  rel = os.path.relpath(results_dir, os.path.dirname(os.path.abspath(md_path)))
  figures.plot_accuracy(results, os.path.join(results_dir,
                                              'accuracy_vs_ratio.png'))
  has_density = figures.plot_layer_density(
      results, os.path.join(results_dir, 'layer_density.png'))
  import jax  # pylint: disable=import-outside-toplevel
  # The pruning phase's default peak lr (config.gsm.learning_rate), shared
  # by the models.
  comparison_lr = plan_lib.default_learning_rate('lenet300')
  exceptions = results_lib.lr_exceptions(results, comparison_lr)
  hand_written = ['# Benchmarks: GSM vs magnitude pruning on Fashion-MNIST', '']
  if os.path.exists(md_path):
    with open(md_path) as f:
      text = f.read()
    if MARKER in text:
      hand_written = text[:text.index(MARKER)].rstrip('\n').split('\n') + ['']
  lines = hand_written + [
      MARKER, '', '## Generated tables', '',
      f'Generated {datetime.date.today()} by `python -m benchmarks.accuracy.run`'
      f' on {platform.machine()} ({os.cpu_count()} CPUs, jax '
      f'{jax.__version__}); every number below comes from the JSON files in '
      f'`{rel}/`.', '',
      'Accuracy is top-1 on the Fashion-MNIST test set after the final global '
      'magnitude prune, with **no fine-tuning** after it. Every method '
      'starts from the same dense model and gets the same epochs and '
      'learning-rate schedule (`config.gsm`: '
      f"{plan_lib.describe_pruning_phase('lenet300')}), "
      'except that where a sweep on a validation split ran at that ratio, '
      'each method takes its own best peak lr there (see Fairness below)'
      + (': ' + '; '.join(exceptions) + '.' if exceptions else '.'), '']
  tuning = results_lib.load_tuning(results_dir)
  lines += findings_lines(results, plan, tuning, comparison_lr)
  bad = [why for why in map(results_lib.invalid, every_run) if why]
  if bad:
    lines += ['## Invalid runs, left out of every table', '',
              'These runs break their method\'s own invariant, so a bug '
              '(in the baseline or the harness) is suspected and not yet '
              'found:', ''] + [f'- {b}.' for b in bad] + ['']
  for model in sorted({r['model'] for r in results}):
    epochs = next(r['epochs'] for r in results if r['model'] == model)
    lines += [f'## {model}: accuracy vs compression', '',
              f"Dense {epochs['dense']} epochs, pruning phase "
              f"{epochs['prune']} epochs. Mean ± std over seeds; the best "
              'pruning method in bold.', '']
    lines += accuracy_table_lines(results, model) + ['']
  lines += [f'![accuracy vs ratio]({rel}/accuracy_vs_ratio.png)', '']
  lines += ['## Paper Table 1 analogue (GSM, base → pruned)', '',
            '| model | ratio | base | pruned | kept weights | paper (MNIST) |',
            '|---|---:|---|---|---:|---|']
  paper = {('lenet300', 60.0): '98.19 → 98.18',
           ('lenet5', 125.0): '99.21 → 99.22',
           ('lenet5', 300.0): '99.21 → 99.06'}
  for (model, ratio), ref in paper.items():
    runs = [r for r in results if r['model'] == model and r['ratio'] == ratio
            and r['method'] == 'gsm' and not results_lib.diverged(r)]
    if runs:
      lines.append(f'| {model} | {ratio:g}× | '
                   f'{fmt(results_lib.mean_std([r["dense_accuracy"] for r in runs]))} | '
                   f'{fmt(results_lib.mean_std([r["pruned_accuracy"] for r in runs]))} | '
                   f'{runs[0]["kept_weights"]:,} | {ref} |')
  lines += ['', '## Paper Table 4 analogue: lottery tickets', '',
            'Masks from GSM, or from global magnitude of the trained dense '
            'model, applied to the *initial* weights and retrained with the '
            'dense schedule and the loss gradient masked.', '',
            '| model | ratio | magnitude ticket | GSM ticket | paper (MNIST) |',
            '|---|---:|---|---|---|']
  paper4 = {('lenet300', 60.0): '97.39 vs 98.22',
            ('lenet5', 125.0): '97.60 vs 99.04',
            ('lenet5', 300.0): '11.35 vs 98.88'}
  for (model, ratio), ref in paper4.items():
    runs = [r for r in results if r['model'] == model and r['ratio'] == ratio
            and r['method'] == 'gsm' and r.get('ticket_accuracy') is not None]
    if runs:
      lines.append(
          f'| {model} | {ratio:g}× | '
          f'{fmt(results_lib.mean_std([r["ticket_magnitude_accuracy"] for r in runs]))} | '
          f'{fmt(results_lib.mean_std([r["ticket_accuracy"] for r in runs]))} | {ref} |')
  if has_density:
    lines += ['', '## Automatic layer-wise sparsity', '',
              f'![layer density]({rel}/layer_density.png)']
  if speed_dir is not None:
    lines += speed_report.speed_lines(speed_dir)
  lines += [''] + sweep_report.tuning_lines(tuning, results, comparison_lr)
  lines += churn_report.decay_sweep_lines(results_dir)
  lines += diagnostics_lines(results_dir)
  lines += ['## Fairness', '',
            '- Same dense start (one dense model per seed, shared through '
            '`config.dense_from`), same epochs, same learning-rate schedule, '
            'momentum and weight decay for every method.',
            '- magnitude + FT: one-shot global magnitude prune of the dense '
            'model, then training with the mask fixed (`fixed_mask`).',
            '- gradual magnitude: cubic schedule from 0 to the final sparsity '
            'over the first 75% of the phase, mask updates every 50 steps, '
            'global ranking (`gradual_magnitude_pruning`).',
            "- GSM, smoothed: GSM ranking |m·w|, m an exponential average of "
            'the gradient (`gsm(..., score_decay=d)`), d chosen on '
            'validation first (LeNet-300 at 60×, seed 0: decays '
            f"{', '.join(f'{d:g}' for d in plan_lib.SCORE_DECAYS)}); the rest "
            'as GSM. Its dense models were trained again from the same seeds '
            '(the shared ones\' workdirs were gone), so its dense column can '
            'differ from the others\' by float noise.',
            f'- Peak lr {comparison_lr:g} for every method, except at a '
            'ratio with a sweep on validation, where each method trains with '
            'its own best lr there' + (' (' + '; '.join(exceptions) + ')'
                                       if exceptions else '') + '.',
            '- Fashion-MNIST replaces MNIST (no download here); the paper\'s '
            'numbers are MNIST numbers and are shown for orientation only.']
  with open(md_path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return md_path
