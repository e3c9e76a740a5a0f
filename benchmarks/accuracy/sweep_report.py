"""Markdown for the learning-rate sweep on validation: every point, each
method's best, and whether the comparison trained at it."""

from benchmarks.accuracy import methods as methods_lib
from benchmarks.accuracy import results as results_lib
from benchmarks.accuracy.methods import label


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
           f"`python -m benchmarks.accuracy.run --part tuning`: {points}, the pruning "
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
  best = results_lib.best_learning_rates(tuning)
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
      if results_lib.diverged(run):
        cells.append('diverged')
        continue
      cell = f"{100 * run['pruned_accuracy']:.2f}"
      cells.append((f'**{cell}**' if lr == best_lr else cell) +
                   f" ({100 * run['accuracy_before_prune']:.2f})")
    lines.append(f'| {model} | {ratio:g}× | {label(method)} | '
                 + ' | '.join(cells) + ' |')
  lines += ['', 'Each method\'s best lr on validation:', '']
  for axis in methods_lib.AXES:
    if any(methods_lib.METHODS[r['method']].axis == axis for r in tuning):
      lines += best_lr_table_lines(tuning, axis) + ['']
  used = results_lib.learning_rates_used(results, default_lr)
  for model, ratio, method in swept:
    text = f'- {model} {ratio:g}× {label(method)}: '
    if (model, ratio, method) not in best:
      lines.append(text + 'diverged at every learning rate of the sweep.')
      continue
    best_lr = best[(model, ratio, method)][0]
    text += f'best lr {best_lr:g}'
    ran = used.get((model, ratio, method))
    if ran is None:
      text += '; no comparison run at this ratio'
    elif ran == [best_lr]:
      text += ', used in the comparison'
    else:
      text += ('; NOT what the comparison used: lr ' +
               ', '.join(f'{lr:g}' for lr in ran))
    lines.append(text + '.')
  return lines + ['']


def best_lr_table_lines(tuning, axis='params'):
  """Markdown lines: each method's best lr on validation per swept (model,
  ratio), for the methods on ``axis`` with a sweep; the README quotes them
  (``tests/test_readme.py`` checks it)."""
  swept_methods = {r['method'] for r in tuning}
  names = [m for m in methods_lib.on_axis(axis) if m in swept_methods]
  tuning = [r for r in tuning if r['method'] in names]
  best = results_lib.best_learning_rates(tuning)
  swept = {(r['model'], r['ratio'], r['method']) for r in tuning}
  lines = ['| model | ratio | ' + ' | '.join(map(label, names)) + ' |',
           '|---|---:|' + '---:|' * len(names)]
  for model, ratio in sorted({(r['model'], r['ratio']) for r in tuning}):
    cells = []
    for method in names:
      key = (model, ratio, method)
      if key in best:
        cells.append(f'{best[key][0]:g}')
      else:  # diverged at every point, or not swept
        cells.append('diverged' if key in swept else '–')
    lines.append(f'| {model} | {ratio:g}× | ' + ' | '.join(cells) + ' |')
  return lines


def stale_lr_text(results, tuning, default_lr):
  """'.' or ', except …' naming comparison runs not at their sweep's best."""
  used = results_lib.learning_rates_used(results, default_lr)
  stale = [f'{model} {ratio:g}× {label(method)} (best {lr:g}, ran at '
           + ', '.join(f'{u:g}' for u in used[(model, ratio, method)]) + ')'
           for (model, ratio, method), (lr, _) in sorted(
               results_lib.best_learning_rates(tuning).items())
           if used.get((model, ratio, method), [lr]) != [lr]]
  if not stale:
    return '.'
  return (', except where the comparison has not yet been rerun at the '
          'sweep\'s best: ' + '; '.join(stale) + '.')
