"""RESULTS.md from the accuracy results: tables and plain statements.

Rendering only: the data and the decisions come from `results`, the figures
from `figures`. The hand-written findings at the top of RESULTS.md (above
`MARKER`) are kept as they are; everything below it is generated.
"""

import datetime
import os
import platform

from benchmarks.accuracy import churn_report
from benchmarks.accuracy import figures
from benchmarks.accuracy import findings
from benchmarks.accuracy import methods as methods_lib
from benchmarks.accuracy import plan as plan_lib
from benchmarks.accuracy import results as results_lib
from benchmarks.accuracy import slim_report
from benchmarks.accuracy import sweep_report
from benchmarks.accuracy.methods import label
from benchmarks.accuracy.methods import METHODS
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


def accuracy_table_lines(results, model, with_n=True, axis='params'):
  """The accuracy-vs-ratio table of ``model`` and the methods on ``axis``
  as Markdown lines, the best pruning method's mean in bold (references
  aside).
  ``with_n=False`` leaves out the ``(n=k)``: the form the README quotes
  (``tests/test_readme.py`` checks it). A method with no run of
  ``model`` (not run yet) has no column."""
  table = results_lib.accuracy_table(results, model, axis)
  names = tuple(c for c in methods_lib.on_axis(axis) if any(
      row[c] is not None or row['diverged'].get(c) for row in table.values()))
  columns = ('dense',) + names
  lines = ['| ratio | dense | ' + ' | '.join(map(label, names)) + ' |',
           '|---:|' + '---|' * len(columns)]
  for ratio, row in table.items():
    means = {c: row[c][0] for c in names if row[c] is not None
             and METHODS[c].kind != 'reference'}  # bold: not a reference
    best = max(means, key=means.get) if means else None
    cells = []
    for c in columns:
      cell = fmt_cell(row[c], row['diverged'].get(c), with_n)
      cells.append(f'**{cell}**' if c == best else cell)
    lines.append(f'| {ratio:g}× | ' + ' | '.join(cells) + ' |')
  return lines


def paper_table_lines(results):
  """The analogues of the paper's Tables 1 and 4 (GSM base → pruned, and
  the lottery tickets), beside the paper's MNIST numbers
  (`plan.PAPER_TABLE1`, `plan.PAPER_TABLE4`)."""
  mean = lambda runs, key: fmt(results_lib.mean_std([r[key] for r in runs]))
  lines = ['## Paper Table 1 analogue (GSM, base → pruned)', '',
           '| model | ratio | base | pruned | kept weights | paper (MNIST) |',
           '|---|---:|---|---|---:|---|']
  for (model, ratio), (base, pruned) in plan_lib.PAPER_TABLE1.items():
    runs = [r for r in results if r['model'] == model and r['ratio'] == ratio
            and r['method'] == 'gsm' and not results_lib.diverged(r)]
    if runs:
      lines.append(f'| {model} | {ratio:g}× | '
                   f"{mean(runs, 'dense_accuracy')} | "
                   f"{mean(runs, 'pruned_accuracy')} | "
                   f"{runs[0]['kept_weights']:,} | {base:.2f} → {pruned:.2f} |")
  lines += ['', '## Paper Table 4 analogue: lottery tickets', '',
            'Masks from GSM, or from global magnitude of the trained dense '
            'model, applied to the *initial* weights and retrained with the '
            'dense schedule and the loss gradient masked.', '',
            '| model | ratio | magnitude ticket | GSM ticket | paper (MNIST) |',
            '|---|---:|---|---|---|']
  for (model, ratio), (magnitude, gsm) in plan_lib.PAPER_TABLE4.items():
    runs = [r for r in results if r['model'] == model and r['ratio'] == ratio
            and r['method'] == 'gsm' and r.get('ticket_accuracy') is not None]
    if runs:
      lines.append(f'| {model} | {ratio:g}× | '
                   f"{mean(runs, 'ticket_magnitude_accuracy')} | "
                   f"{mean(runs, 'ticket_accuracy')} | {magnitude:.2f} vs "
                   f'{gsm:.2f} |')
  return lines


def fairness_lines(results_dir, results, comparison_lr, exceptions):
  """RESULTS.md's Fairness section: the shared protocol, each method's
  record's line (`methods.Method.fairness`, filled from its config), the
  values its `methods.Choice` was chosen from, and the lrs."""
  lines = ['## Fairness', '',
           '- Same dense start (one dense model per seed, shared through '
           '`config.dense_from`), same epochs, same learning-rate schedule, '
           'momentum and weight decay for every method.']
  for name in sorted({r['method'] for r in results}, key=list(METHODS).index):
    method = METHODS[name]
    models = sorted({r['model'] for r in results if r['method'] == name})
    texts = {m: method.fairness.format(c=plan_lib.make_config(
        m, {'dense_epochs': 1, 'prune_epochs': 1, 'decay_epochs': ()}, name,
        1.0, 0, '', None)) for m in models}
    # One line, or one per model where the configs differ (`PerModel`).
    text = (texts[models[0]] if len(set(texts.values())) == 1 else
            ' '.join(f'{m}: {t}' for m, t in texts.items()))
    c = method.choice
    swept = results_lib.load_choice(results_dir, name) if c else []
    if swept:
      text += (f' Its {c.name} is chosen on validation first ({c.model} at '
               f'{c.ratio:g}×, seed {c.seed}: {c.name}s '
               + ', '.join(f'{r[c.field]:g}' for r in swept)
               + ').')
    lines.append(f'- {text}')
  return lines + [
      f'- Peak lr {comparison_lr:g} for every method, except at a '
      'ratio with a sweep on validation, where each method trains with '
      'its own best lr there' + (' (' + '; '.join(exceptions) + ')'
                                 if exceptions else '') + '.',
      '- Fashion-MNIST replaces MNIST (no download here); the paper\'s '
      'numbers are MNIST numbers and are shown for orientation only.']


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
  lines += findings.findings_lines(results, plan, tuning, comparison_lr)
  bad = [why for why in map(results_lib.invalid, every_run) if why]
  if bad:
    lines += ['## Invalid runs, left out of every table', '',
              'These runs break their method\'s own invariant, so a bug '
              '(in the baseline or the harness) is suspected and not yet '
              'found:', ''] + [f'- {b}.' for b in bad] + ['']
  for model in sorted({r['model'] for r in results}):
    epochs = next(r['epochs'] for r in results if r['model'] == model)
    for axis in results_lib.axes(results, model):
      lines += [f'## {model}: accuracy vs '
                + ('compression' if axis == 'params' else
                   methods_lib.AXES[axis]), '',
                f"Dense {epochs['dense']} epochs, pruning phase "
                f"{epochs['prune']} epochs. Mean ± std over seeds; the best "
                'pruning method in bold.', '']
      lines += accuracy_table_lines(results, model, axis=axis) + ['']
  lines += [f'![accuracy vs ratio]({rel}/accuracy_vs_ratio.png)', '']
  lines += paper_table_lines(results)
  if has_density:
    lines += ['', '## Automatic layer-wise sparsity', '',
              f'![layer density]({rel}/layer_density.png)']
  lines += slim_report.slim_lines(results)
  if slim_report.plot_speedup(results, os.path.join(results_dir,
                                                    'accuracy_vs_speedup.png')):
    lines += [f'![accuracy vs speed-up]({rel}/accuracy_vs_speedup.png)', '']
  if speed_dir is not None:
    lines += speed_report.speed_lines(speed_dir)
  lines += [''] + sweep_report.tuning_lines(tuning, results, comparison_lr)
  lines += churn_report.choice_lines(results_dir)
  lines += diagnostics_lines(results_dir)
  lines += fairness_lines(results_dir, results, comparison_lr, exceptions)
  with open(md_path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return md_path
