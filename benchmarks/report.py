"""Tables and figures from ``benchmarks/results/*.json`` (see benchmarks.run)."""

import datetime
import glob
import json
import os
import platform
import statistics

import numpy as np

METHOD_NAMES = {'gsm': 'GSM', 'magnitude_ft': 'magnitude + FT',
                'gradual_magnitude': 'gradual magnitude'}


TRAIN_STEP_FILES = ('train_step.json', 'train_step_peak_lr.json')
SPEED_FILES = ('step_overhead.json',) + TRAIN_STEP_FILES


def load(results_dir):
  """Valid accuracy results (one dict per run; speed files excluded).

  See `invalid`: runs that break the method's own invariant are left out.
  """
  return [r for r in load_all(results_dir) if not invalid(r)]


def load_all(results_dir):
  return [json.load(open(p))
          for p in sorted(glob.glob(os.path.join(results_dir, '*.json')))
          if os.path.basename(p) not in SPEED_FILES]


def invalid(run):
  """Why a run cannot be used, or ''. Gradual magnitude pruning and
  magnitude + FT hold their weights at the final mask, so the final prune
  must not change their accuracy; if it does, the run never reached its
  sparsity and its number would be a one-shot prune of a denser model."""
  if (run['method'] in ('gradual_magnitude', 'magnitude_ft') and
      run.get('accuracy_before_prune') is not None and
      run['accuracy_before_prune'] != run['pruned_accuracy']):
    return (f"{run['model']} {METHOD_NAMES[run['method']]} "
            f"{run['ratio']:g}× seed {run['seed']}: accuracy "
            f"{100 * run['accuracy_before_prune']:.2f}% before the final "
            f"prune, {100 * run['pruned_accuracy']:.2f}% after; it did not "
            'reach its sparsity during training')
  return ''


def speed_lines(results_dir):
  """Markdown for the speed JSON files written by the speed benchmarks."""
  lines = []
  path = os.path.join(results_dir, 'step_overhead.json')
  if os.path.exists(path):
    data = json.load(open(path))
    methods = [m for m in data['rows'][0]['seconds'] if m != 'sgd']
    lines += ['', '## Speed: optimizer step, GSM vs optax.sgd', '',
              '`python -m benchmarks.step_overhead --json '
              'benchmarks/results/step_overhead.json` (median, after '
              f"compilation, ratio {data['ratio']:g}):", '',
              '| tree | params | sgd step | ' + ' | '.join(
                  f'{m} / sgd' for m in methods) + ' |',
              '|---|---:|---:|' + '---:|' * len(methods)]
    for row in data['rows']:
      sec = row['seconds']
      lines.append(f"| {row['tree']} | {row['params']:,} | "
                   f"{sec['sgd'] * 1e3:.2f} ms | " + ' | '.join(
                       f"{sec[m] / sec['sgd']:.1f}×" for m in methods) + ' |')
  paths = [os.path.join(results_dir, name) for name in TRAIN_STEP_FILES]
  rows = [row for path in paths if os.path.exists(path)
          for row in json.load(open(path))['rows']]
  if rows:
    methods = [m for m in rows[0]['seconds'] if m != 'sgd']
    lines += ['', '## Speed: training step, GSM vs dense SGD (target ≤ 1.15×)',
              '', '`python -m benchmarks.train_step --json '
              'benchmarks/results/train_step.json` and, 468 steps into the '
              'pruning phase (past its one-epoch learning-rate warm-up), '
              '`python -m benchmarks.train_step --pruning-steps 468 --json '
              'benchmarks/results/train_step_peak_lr.json` (batch 256 of '
              'Fashion-MNIST from a model trained dense for '
              f"{rows[0]['dense_steps']} steps; {rows[0]['repeats']} steps "
              'timed, GSM and SGD alternated on the same batches; medians):',
              '', '| model | ratio | timed from pruning step | SGD step | ' +
              ' | '.join(f'GSM {m} / SGD' for m in methods) + ' |',
              '|---|---:|---:|---:|' + '---:|' * len(methods)]
    for row in rows:
      sec = row['seconds']
      lines.append(f"| {row['model']} | {row['ratio']:g}× | "
                   f"{row.get('pruning_steps', 0)} | "
                   f"{sec['sgd'] * 1e3:.2f} ms | " + ' | '.join(
                       f"{sec[m] / sec['sgd']:.2f}×" for m in methods) + ' |')
  return lines


def load_tuning(results_dir):
  """The learning-rate sweep (``results_dir/tuning/*.json``), if run."""
  return [json.load(open(p)) for p in
          sorted(glob.glob(os.path.join(results_dir, 'tuning', '*.json')))]


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
          f"{METHOD_NAMES[method]} {'/'.join(f'{lr:g}' for lr in other)}")
  return [f'{model} {ratio:g}×: ' + ', '.join(cells)
          for (model, ratio), cells in by_point.items()]


def tuning_lines(tuning, results, default_lr):
  """Markdown: validation accuracy per sweep, method and learning rate, and
  which lr the comparison used at each swept ratio."""
  if not tuning:
    return []
  lrs = sorted({r['learning_rate'] for r in tuning})
  points = ', '.join(f'{m} at {ratio:g}× (seed {seed})' for m, ratio, seed in
                     sorted({(r['model'], r['ratio'], r['seed'])
                             for r in tuning}))
  lines = ['## Fairness: learning-rate sweep on a validation split', '',
           f"`python -m benchmarks.run --part tuning`: {points}, the pruning "
           "phase's peak learning rate swept per method (same dense start, "
           'epochs, schedule shape, momentum and decay). Trained on the first '
           '5/6 of the training set; accuracy (%) after the final prune on '
           'its last 1/6, never on the test set, and in brackets before it. '
           'Best per method in bold; – where a sweep has no such point. At a '
           'swept ratio the comparison trains each method with its best lr '
           f'there, at every other ratio with lr {default_lr:g}.', '',
           '| model | ratio | method | ' +
           ' | '.join(f'lr {lr:g}' for lr in lrs) + ' |',
           '|---|---:|---|' + '---:|' * len(lrs)]
  best = best_learning_rates(tuning)
  by_point = {(r['model'], r['ratio'], r['method'], r['learning_rate']): r
              for r in tuning}
  swept = sorted({(r['model'], r['ratio'], r['method']) for r in tuning},
                 key=lambda k: (k[0], -k[1], k[2]))
  for model, ratio, method in swept:
    best_lr = best.get((model, ratio, method), (None,))[0]
    cells = []
    for lr in lrs:
      run = by_point.get((model, ratio, method, lr))
      if run is None:
        cells.append('–')
        continue
      if diverged(run):
        cells.append('diverged')
        continue
      cell = f"{100 * run['pruned_accuracy']:.2f}"
      cells.append((f'**{cell}**' if lr == best_lr else cell) +
                   f" ({100 * run['accuracy_before_prune']:.2f})")
    lines.append(f'| {model} | {ratio:g}× | {METHOD_NAMES[method]} | '
                 + ' | '.join(cells) + ' |')
  lines += ['', 'Each method\'s best lr on validation:', '']
  lines += best_lr_table_lines(tuning) + ['']
  used = learning_rates_used(results, default_lr)
  for model, ratio, method in swept:
    text = f'- {model} {ratio:g}× {METHOD_NAMES[method]}: '
    if (model, ratio, method) not in best:
      lines.append(text + 'diverged at every learning rate of the sweep.')
      continue
    best_lr = best[(model, ratio, method)][0]
    text += f'best lr {best_lr:g}'
    ran = used.get((model, ratio, method))
    if ran is None:
      text += '; no comparison run at this ratio.'
    elif ran == [best_lr]:
      text += ', used in the comparison.'
    else:
      text += ('; NOT what the comparison used: lr ' +
               ', '.join(f'{lr:g}' for lr in ran) + '.')
    lines.append(text)
  return lines + ['']


def diagnostics_lines(results_dir):
  """Markdown for single runs that answer one question each
  (``results_dir/diagnostics/*.json``: a report plus its question, command
  and date)."""
  runs = [json.load(open(p)) for p in sorted(
      glob.glob(os.path.join(results_dir, 'diagnostics', '*.json')))]
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


def mean_std(values):
  values = [v for v in values if v is not None]
  if not values:
    return None
  return (100 * statistics.mean(values),
          100 * statistics.stdev(values) if len(values) > 1 else 0.0,
          len(values))


def fmt(stat, with_n=True):
  """``mean ± std (n=k)``, or without ``(n=k)`` when ``with_n`` is False."""
  if stat is None:
    return '–'
  mean, std, n = stat
  if n == 1:
    return f'{mean:.2f} (n=1)'
  return f'{mean:.2f} ± {std:.2f}' + (f' (n={n})' if with_n else '')


def diverged(run):
  """Whether training diverged (non-finite parameters; see examples.train)."""
  return bool(run.get('diverged'))


def accuracy_table(results, model):
  """{ratio: {column: (mean, std, n)}} for one model, and under
  ``'diverged'`` {method: the number of its runs that diverged}, which the
  means leave out."""
  rows = {}
  for ratio in sorted({r['ratio'] for r in results if r['model'] == model}):
    runs = [r for r in results if r['model'] == model and r['ratio'] == ratio]
    row = {'dense': mean_std({r['seed']: r['dense_accuracy']
                              for r in runs}.values()),
           'diverged': {}}
    for method in METHOD_NAMES:
      row[method] = mean_std([r['pruned_accuracy'] for r in runs
                              if r['method'] == method and not diverged(r)])
      row['diverged'][method] = sum(1 for r in runs if r['method'] == method
                                    and diverged(r))
    rows[ratio] = row
  return rows


def num_runs(stat, num_diverged):
  """All runs of a cell: those in its ``(mean, std, n)`` and the diverged."""
  return num_diverged + (stat[2] if stat else 0)


def fmt_cell(stat, num_diverged, with_n=True):
  """A table cell: mean ± std (n), and how many runs diverged."""
  if not num_diverged:
    return fmt(stat, with_n)
  text = f'diverged in {num_diverged} of {num_runs(stat, num_diverged)}'
  return f'{fmt(stat, with_n)}; {text}' if stat else text


def accuracy_table_lines(results, model, with_n=True):
  """The accuracy-vs-ratio table of ``model`` as Markdown lines, the best
  pruning method's mean in bold. ``with_n=False`` leaves out the ``(n=k)``:
  the form the README quotes (``tests/test_readme.py`` checks it)."""
  columns = ('dense',) + tuple(METHOD_NAMES)
  lines = ['| ratio | dense | ' + ' | '.join(METHOD_NAMES.values()) + ' |',
           '|---:|' + '---|' * len(columns)]
  for ratio, row in accuracy_table(results, model).items():
    means = {c: row[c][0] for c in METHOD_NAMES if row[c] is not None}
    best = max(means, key=means.get) if means else None
    cells = []
    for c in columns:
      cell = fmt_cell(row[c], row['diverged'].get(c), with_n)
      cells.append(f'**{cell}**' if c == best else cell)
    lines.append(f'| {ratio:g}× | ' + ' | '.join(cells) + ' |')
  return lines


def passive_decay_exponent(model, budget, steps_per_epoch=60_000 // 256):
  """Σ_t lr_t·λ/(1-β) over the pruning phase of a ``benchmarks.run``
  budget, with the schedule of the runs (`examples.train`): a never-active
  weight ends at about exp(-this) of its start."""
  # pylint: disable=import-outside-toplevel
  from benchmarks import run
  from examples import train
  g = run.make_config(model, budget, 'gsm', budget['ratios'][0], 0, '',
                      None).gsm
  schedule = train.learning_rate_schedule(g, steps_per_epoch)
  lrs = schedule(np.arange(budget['prune_epochs'] * steps_per_epoch))
  return float(np.sum(np.asarray(lrs, np.float64))) * (
      g.weight_decay / (1 - g.momentum))


def best_lr_table_lines(tuning):
  """Markdown lines: each method's best lr on validation per swept (model,
  ratio); the README quotes them (``tests/test_readme.py`` checks it)."""
  best = best_learning_rates(tuning)
  swept = {(r['model'], r['ratio'], r['method']) for r in tuning}
  lines = ['| model | ratio | ' + ' | '.join(METHOD_NAMES.values()) + ' |',
           '|---|---:|' + '---:|' * len(METHOD_NAMES)]
  for model, ratio in sorted({(r['model'], r['ratio']) for r in tuning}):
    cells = []
    for method in METHOD_NAMES:
      key = (model, ratio, method)
      if key in best:
        cells.append(f'{best[key][0]:g}')
      else:  # diverged at every point, or not swept
        cells.append('diverged' if key in swept else '–')
    lines.append(f'| {model} | {ratio:g}× | ' + ' | '.join(cells) + ' |')
  return lines


def stale_lr_text(results, tuning, default_lr):
  """'.' or ', except …' naming comparison runs not at their sweep's best."""
  used = learning_rates_used(results, default_lr)
  stale = [f'{model} {ratio:g}× {METHOD_NAMES[method]} (best {lr:g}, ran at '
           + ', '.join(f'{u:g}' for u in used[(model, ratio, method)]) + ')'
           for (model, ratio, method), (lr, _) in sorted(
               best_learning_rates(tuning).items())
           if used.get((model, ratio, method), [lr]) != [lr]]
  if not stale:
    return '.'
  return (', except where the comparison has not yet been rerun at the '
          'sweep\'s best: ' + '; '.join(stale) + '.')


def divergence_lines(results, tuning, default_lr):
  """Where GSM diverged in the comparison: its lr, and the sweep's run."""
  by_point = {(r['model'], r['ratio'], r['method'], r['learning_rate']): r
              for r in tuning}
  lines = []
  for model, ratio, lr in sorted({
      (r['model'], r['ratio'], learning_rate_of(r, default_lr))
      for r in results if r['method'] == 'gsm' and diverged(r)}):
    text = f'- {model} {ratio:g}×: GSM at lr {lr:g}'
    swept = by_point.get((model, ratio, 'gsm', lr))
    if swept is not None:
      text += (', its best on validation at this ratio. The sweep\'s run (seed '
               f"{swept['seed']}, 5/6 of the training set) "
               + ('diverged too.' if diverged(swept) else
                  f"did not diverge: {100 * swept['pruned_accuracy']:.2f}% "
                  'on validation after the prune. This lr is at the edge of '
                  'what GSM trains stably at this ratio.'))
    else:
      text += ' (no sweep at this ratio).'
    lines.append(text)
  return lines


def findings_lines(results, plan, tuning=(), default_lr=0.03):
  """Plain statements: where GSM wins or loses, computed from the table."""
  lines = ['## Findings', '']
  for model in sorted({r['model'] for r in results}):
    for ratio, row in accuracy_table(results, model).items():
      failed = row['diverged']['gsm']
      if failed:
        lines.append(f'- {model} {ratio:g}×: GSM diverged (non-finite loss '
                     f"and weights) in {failed} of {num_runs(row['gsm'], failed)}"
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
      lines.append(text + '.')
  gsm = [r for r in results if r['method'] == 'gsm' and not diverged(r)
         and r.get('accuracy_before_prune') is not None]
  if gsm:
    lines += ['', 'What the final prune costs GSM (accuracy before it minus '
              'after it, in points):', '']
    for model in sorted({r['model'] for r in gsm}):
      costs = [100 * (r['accuracy_before_prune'] - r['pruned_accuracy'])
               for r in gsm if r['model'] == model]
      epochs = next(r['epochs']['prune'] for r in gsm if r['model'] == model)
      lines.append(f'- {model} ({epochs} pruning epochs): mean '
                   f'{statistics.mean(costs):+.2f}, largest {max(costs):+.2f} '
                   f'over {len(costs)} runs.')
    lines += ['', 'Where the cost is near zero the passive weights have '
              'decayed, so what GSM loses against gradual magnitude pruning '
              'is lost during training with only Q weights receiving '
              'gradient, not at the prune. Where it is not, the budget was '
              'too short for the passive weights to decay: their magnitude '
              'shrinks by exp(-Σ lr·λ/(1-β)) over the steps, '
              + ', '.join(f'e^-{passive_decay_exponent(m, plan[m]):.1f} '
                          f'for {m}' for m in sorted({r['model'] for r in gsm})
                          if m in plan)
              + ' with the epoch budgets of the tables below. The paper '
              'trained GSM for 280 epochs on MNIST; this harness gives every '
              'method the same, shorter budget on the harder Fashion-MNIST.',
              '', 'Why, from the learning-rate sweep and the diagnostic '
              'below: GSM\'s learning rate sets a trade-off that the '
              'baselines do not have. At lr 3e-2 the passive weights decay '
              'to nothing in 60 epochs (the prune is free), but the active '
              'set, re-chosen every step from a noisy |g·w|, trains less well '
              'than a fixed or slowly changing mask. At lr 1e-2 the model is '
              'better before the prune but the passive weights still carry '
              'part of the function, which the final prune removes; three '
              'times the epochs at 1e-2 shrink that cost but then overfit.'
              + (' Each method\'s best peak lr on validation is in the '
                 'table of "Fairness: learning-rate sweep on a validation '
                 'split" below. At those ratios the comparison '
                 'trains each method at its own best, so the lr handicaps '
                 'none of them there' + stale_lr_text(results, tuning,
                                                      default_lr)
                 if tuning else '')]
  if any(diverged(r) for r in results):
    lines += ['', 'Where GSM diverged, the training loss rose after the '
              'warm-up to the peak lr and never came back down, until the '
              'weights were NaN. The baselines took the same schedule without '
              'diverging; see the diagnostics below for GSM at a lower lr.',
              ''] + divergence_lines(results, tuning, default_lr)
  return lines + ['']


def plot_accuracy(results, path):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  models = sorted({r['model'] for r in results})
  fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6),
                           squeeze=False)
  for ax, model in zip(axes[0], models):
    table = accuracy_table(results, model)
    ratios = sorted(table)
    for column, style in (('dense', 'k--'), ('gsm', 'o-'),
                          ('magnitude_ft', 's-'), ('gradual_magnitude', '^-')):
      pts = [(r, table[r][column]) for r in ratios if table[r][column]]
      if not pts:
        continue
      x = [p[0] for p in pts]
      y = np.array([p[1][0] for p in pts])
      e = np.array([p[1][1] for p in pts])
      ax.errorbar(x, y, yerr=e, fmt=style, capsize=3,
                  label=METHOD_NAMES.get(column, column))
    ax.set_xscale('log')
    ax.set_xlabel('compression ratio (log)')
    ax.set_ylabel('test accuracy (%)')
    ax.set_title(f'{model} on Fashion-MNIST, after the final prune '
                 '(no fine-tuning)', fontsize=9)
    ax.legend(fontsize=8)
  _save(fig, path)


def plot_layer_density(results, path, cases=(('lenet300', 60.0),
                                             ('lenet5', 125.0))):
  """Per-layer density found by GSM vs by global magnitude (seed 0)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  found = []
  for model, ratio in cases:
    pair = {r['method']: r for r in results if r['model'] == model and
            r['ratio'] == ratio and r['seed'] == 0}
    if 'gsm' in pair and 'magnitude_ft' in pair:
      found.append((model, ratio, pair))
  if not found:
    return False
  fig, axes = plt.subplots(1, len(found), figsize=(5 * len(found), 3.6),
                           squeeze=False)
  for ax, (model, ratio, pair) in zip(axes[0], found):
    layers = [l for l in pair['gsm']['sparsity']['leaves'] if l['prunable']]
    names = [l['path'].strip("[]'").replace("']['", '.') for l in layers]
    x = np.arange(len(layers))
    for offset, method in ((-0.2, 'gsm'), (0.2, 'magnitude_ft')):
      dens = [100 * l['density'] for l in pair[method]['sparsity']['leaves']
              if l['prunable']]
      ax.bar(x + offset, dens, width=0.4, label=(
          'GSM' if method == 'gsm' else 'global magnitude of the dense model'))
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45, ha='right', fontsize=8)
    ax.set_yscale('log')
    ax.set_ylabel('density (% kept, log)')
    ax.set_title(f'{model} at {ratio:g}x: layer-wise density', fontsize=10)
    ax.legend(fontsize=8)
  _save(fig, path)
  return True


def _save(fig, path):
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write(results_dir, plan=None):
  """Writes RESULTS.md and the PNG figures beside ``results_dir``."""
  every_run = load_all(results_dir)
  results = [r for r in every_run if not invalid(r)]
  out_dir = os.path.dirname(os.path.abspath(results_dir))
  name = os.path.basename(os.path.abspath(results_dir))
  md_path = os.path.join(out_dir, 'RESULTS.md' if name == 'results'
                         else f'RESULTS_{name}.md')
  if not results:
    return md_path
  acc_png = os.path.join(results_dir, 'accuracy_vs_ratio.png')
  density_png = os.path.join(results_dir, 'layer_density.png')
  plot_accuracy(results, acc_png)
  has_density = plot_layer_density(results, density_png)
  import jax  # pylint: disable=import-outside-toplevel
  # The pruning phase's default peak lr (config.gsm.learning_rate), shared
  # by the models.
  from examples.configs import lenet300_fmnist  # pylint: disable=import-outside-toplevel
  comparison_lr = lenet300_fmnist.get_config().gsm.learning_rate
  exceptions = lr_exceptions(results, comparison_lr)
  lines = [
      '# Benchmarks: GSM vs magnitude pruning on Fashion-MNIST', '',
      f'Generated {datetime.date.today()} by `python -m benchmarks.run'
      f'{"" if name == "results" else " --quick"}` on '
      f'{platform.machine()} ({os.cpu_count()} CPUs, jax {jax.__version__}); '
      'every number below comes from the JSON files in '
      f'`benchmarks/{name}/`.', '',
      'Accuracy is top-1 on the Fashion-MNIST test set after the final global '
      'magnitude prune, with **no fine-tuning** after it. Every method '
      'starts from the same dense model and gets the same epochs and '
      'learning-rate schedule (`config.gsm`: momentum 0.99 Nesterov, peak lr '
      f'{comparison_lr:g}, warm-up 1 epoch, x0.1 steps, weight decay 5e-4), '
      'except that where a sweep on a validation split ran at that ratio, '
      'each method takes its own best peak lr there (see Fairness below)'
      + (': ' + '; '.join(exceptions) + '.' if exceptions else '.'),
      '', 'The long runs were split over two single-threaded workers, one a '
      'core (`XLA_FLAGS="--xla_cpu_multi_thread_eigen=false '
      'intra_op_parallelism_threads=1" taskset -c 0 python -m benchmarks.run '
      '--models lenet5 --seeds 1 --ratios 125`, and so on, with '
      '`--seeds/--ratios/--methods`). On this 2-core CPU one measurement of '
      '40 GSM steps of LeNet-5 (batch 256) gave 155 ms a step in each of two '
      'such workers against 136 ms in one two-threaded process: about 1.75× '
      'the throughput.', '']
  if plan is None:
    from benchmarks import run  # pylint: disable=import-outside-toplevel
    plan = run.QUICK if name == 'results_quick' else run.FULL
  tuning = load_tuning(results_dir)
  lines += findings_lines(results, plan, tuning, comparison_lr)
  bad = [why for why in map(invalid, every_run) if why]
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
  lines += ['![accuracy vs ratio](' + f'{name}/accuracy_vs_ratio.png)', '']
  lines += ['## Paper Table 1 analogue (GSM, base → pruned)', '',
            '| model | ratio | base | pruned | kept weights | paper (MNIST) |',
            '|---|---:|---|---|---:|---|']
  paper = {('lenet300', 60.0): '98.19 → 98.18',
           ('lenet5', 125.0): '99.21 → 99.22',
           ('lenet5', 300.0): '99.21 → 99.06'}
  for (model, ratio), ref in paper.items():
    runs = [r for r in results if r['model'] == model and r['ratio'] == ratio
            and r['method'] == 'gsm' and not diverged(r)]
    if runs:
      lines.append(f'| {model} | {ratio:g}× | '
                   f'{fmt(mean_std([r["dense_accuracy"] for r in runs]))} | '
                   f'{fmt(mean_std([r["pruned_accuracy"] for r in runs]))} | '
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
          f'{fmt(mean_std([r["ticket_magnitude_accuracy"] for r in runs]))} | '
          f'{fmt(mean_std([r["ticket_accuracy"] for r in runs]))} | {ref} |')
  if has_density:
    lines += ['', '## Automatic layer-wise sparsity', '',
              f'![layer density]({name}/layer_density.png)']
  lines += speed_lines(results_dir)
  lines += [''] + tuning_lines(tuning, results, comparison_lr)
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
            f'- Peak lr {comparison_lr:g} for every method, except at a '
            'ratio with a sweep on validation, where each method trains with '
            'its own best lr there' + (' (' + '; '.join(exceptions) + ')'
                                       if exceptions else '') + '.',
            '- Fashion-MNIST replaces MNIST (no download here); the paper\'s '
            'numbers are MNIST numbers and are shown for orientation only.']
  with open(md_path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return md_path
