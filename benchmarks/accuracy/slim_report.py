"""The structured methods' slim models, as Markdown lines and a figure:
accuracy beside the FLOPs and parameters kept, the widths found and the
measured speed-up of the slim model on the CPU.

Rendering only, like `report`; every number comes from a run's ``slim``
field (`examples.paper.deploy.export_slim`).
"""

import statistics

import numpy as np

from benchmarks.accuracy import methods as methods_lib
from benchmarks.accuracy import results as results_lib
from benchmarks.accuracy.methods import label


def slim_rows(results):
  """{(model, method, ratio): [runs with a slim model]}, not diverged."""
  rows = {}
  for r in results:
    if r.get('slim') and not results_lib.diverged(r):
      rows.setdefault((r['model'], r['method'], r['ratio']), []).append(r)
  return rows


def layer_name(path):
  """``"['fc1']"`` -> ``fc1``."""
  return path.strip("[]'").replace("']['", '.')


def timing_of(run):
  """The slim model's timing of ``run``: retimed on its own
  (``benchmarks.speed.slim --retime``) if it was, else the run's own."""
  return run['slim'].get('retimed', run['slim']['inference'])


def speedups(runs):
  return [timing_of(r)['speedup'] for r in runs]


def slim_lines(results):
  """The table: per model, method and ratio, accuracy after the cut (mean ±
  std), the FLOPs and parameters kept, the widths of seed 0 (or the first
  seed), and the slim model's speed-up over the full one (median, range)."""
  rows = slim_rows(results)
  if not rows:
    return []
  order = list(methods_lib.METHODS)
  timings = [timing_of(r) for runs in rows.values() for r in runs]
  batch = '/'.join(str(b) for b in sorted({t['batch'] for t in timings}))
  retimed = [t for t in timings if 'date' in t]
  how = f'batch {batch}, median of the seeds, their range in brackets; '
  if len(retimed) == len(timings):
    how += ('timed again on their own, dense and slim alternated, by '
           '`python -m benchmarks.speed.slim --retime '
           'benchmarks/results/accuracy` on a '
           + ', '.join(sorted({t['machine'] for t in retimed})) + ' CPU, jax '
           + ', '.join(sorted({t['jax'] for t in retimed})) + ', '
           + ', '.join(sorted({t['date'] for t in retimed})) + ')')
  else:
    how += ((f'{len(retimed)} of {len(timings)} timed again on their own, '
              'the others ' if retimed else '')
           + 'timed at the end of their run while another run trained beside '
           'it, so read it as a ratio, roughly)')
  lines = ['## Structured: the slim models', '',
           'Accuracy after the final cut (no fine-tuning after it), the '
           'share of FLOPs and parameters the slim model keeps, the widths '
           'it keeps (first seed), and its forward pass against the full '
           'model\'s on this CPU (' + how + '.', '',
           '| model | method | FLOPs ÷ | accuracy | FLOPs kept | params kept '
           '| widths | speed-up |', '|---|---|---:|---|---:|---:|---|---:|']
  for (model, method, ratio), runs in sorted(
      rows.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]),
                                    kv[0][2])):
    first = min(runs, key=lambda r: r['seed'])['slim']
    kept = lambda pair: f'{100 * pair[1] / pair[0]:.1f}%'
    s = speedups(runs)
    widths = ', '.join(f'{layer_name(name)} {n}/{size}'
                       for name, size, n in first['channels'])
    acc = results_lib.mean_std([r['pruned_accuracy'] for r in runs])
    lines.append(
        f'| {model} | {label(method)} | {ratio:g}× | '
        f'{acc[0]:.2f}' + (f' ± {acc[1]:.2f}' if acc[2] > 1 else '') +
        f' (n={acc[2]}) | {kept(first["flops"])} | '
        f'{kept(first["params"])} | {widths} | {statistics.median(s):.2f}× '
        f'({min(s):.2f}–{max(s):.2f}) |')
  return lines + ['']


def plot_speedup(results, path):
  """Accuracy against the slim model's measured speed-up, one line per
  method, a panel per model. Returns whether there was anything to draw."""
  rows = slim_rows(results)
  if not rows:
    return False
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  models = sorted({m for m, _, _ in rows})
  fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6),
                           squeeze=False)
  for ax, model in zip(axes[0], models):
    for method in methods_lib.METHODS:
      pts = sorted((statistics.median(speedups(runs)),
                    100 * np.mean([r['pruned_accuracy'] for r in runs]),
                    100 * np.std([r['pruned_accuracy'] for r in runs]))
                   for (m, meth, _), runs in rows.items()
                   if m == model and meth == method)
      if pts:
        x, y, e = map(np.array, zip(*pts))
        ax.errorbar(x, y, yerr=e, fmt=methods_lib.METHODS[method].marker,
                    capsize=3, label=label(method))
    ax.set_xlabel('measured CPU speed-up of the slim model (×)')
    ax.set_ylabel('test accuracy (%)')
    ax.set_title(f'{model} on Fashion-MNIST: accuracy vs speed-up',
                 fontsize=9)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return True
