"""GSM's churn and the sweeps of a method's chosen hyperparameter (the
smoothed ranking's decay), as Markdown lines.

Rendering only, like `report` (which includes these lines in RESULTS.md);
the data come from `results`.
"""

import statistics

from benchmarks.accuracy import results as results_lib
from benchmarks.accuracy.methods import label
from benchmarks.accuracy.methods import METHODS


def choice_lines(results_dir):
  """Each `methods.Choice` sweep on validation, and the value chosen."""
  lines = []
  for name, method in METHODS.items():
    c = method.choice
    runs = results_lib.load_choice(results_dir, name) if c else []
    if not runs:
      continue
    try:
      chosen = results_lib.chosen_value(
          results_dir, name, tuple(r[c.field] for r in runs))
    except ValueError:
      chosen = None
    lines += [f'## {label(name)}: its {c.name} (validation)', '',
              f'{c.model} at {c.ratio:g}×, lr {c.learning_rate:g}, seed '
              f'{c.seed}, on the validation split; accuracy after the prune '
              '(before it), the mean weights entering the active set per '
              'step in the last epoch, and the share of the kernels\' norm '
              'the prune removed.', '',
              f'| {c.name} | after prune (before) | entered per step, last '
              'epoch | prune removed |', '|---:|---|---:|---:|']
    for r in runs:
      mark = ' (chosen)' if r[c.field] == chosen else ''
      lines.append(f"| {r[c.field]:g}{mark} | "
                   f"{100 * r['pruned_accuracy']:.2f}% "
                   f"({100 * r['accuracy_before_prune']:.2f}%) | "
                   f"{r['entered_per_step'][-1]:,.0f} | "
                   f"{100 * r['pruned_norm_share'][-1]:.1f}% |")
    lines.append('')
  return lines


def churn_lines(results):
  """Mean churn (weights entering the active set per step) in the first and
  the last pruning epoch, and the share of the kernels' norm the final
  prune removed, for the runs that logged them."""
  logged = [r for r in results if r.get('entered_per_step')
            and not results_lib.diverged(r)]
  if not logged:
    return []
  lines = ['', 'Churn and the prune, where logged (mean over seeds): '
           'weights entering the active set per step in the first and the '
           'last pruning epoch, and the share of the kernels\' norm the '
           'final prune removed:', '']
  for key in sorted({(r['model'], r['ratio'], r['method']) for r in logged}):
    runs = [r for r in logged if (r['model'], r['ratio'], r['method']) == key]
    mean = lambda f: statistics.mean(f(r) for r in runs)
    decay = runs[0].get('score_decay')
    lines.append(
        f"- {key[0]} {key[1]:g}× {label(key[2])}"
        + (f' (decay {decay:g})' if decay is not None else '')
        + f": {mean(lambda r: r['entered_per_step'][0]):,.0f} → "
        f"{mean(lambda r: r['entered_per_step'][-1]):,.0f} of "
        f"{runs[0]['kept_weights']:,}; prune removed "
        f"{100 * mean(lambda r: r['pruned_norm_share'][-1]):.1f}% "
        f'(n={len(runs)}).')
  return lines
