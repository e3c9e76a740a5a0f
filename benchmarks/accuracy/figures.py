"""The accuracy benchmark's figures, drawn from `results`' tables."""

import numpy as np

from benchmarks.accuracy import methods as methods_lib
from benchmarks.accuracy import results as results_lib
from benchmarks.accuracy.methods import METHODS


def plot_accuracy(results, path):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  panels = [(model, axis) for model in sorted({r['model'] for r in results})
            for axis in results_lib.axes(results, model)]
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6),
                           squeeze=False)
  for ax, (model, axis) in zip(axes[0], panels):
    table = results_lib.accuracy_table(results, model, axis)
    ratios = sorted(table)
    for column, style in (('dense', 'k--'),) + tuple(
        (m, METHODS[m].marker) for m in methods_lib.on_axis(axis)):
      pts = [(r, table[r][column]) for r in ratios if table[r][column]]
      if not pts:
        continue
      x = [p[0] for p in pts]
      y = np.array([p[1][0] for p in pts])
      e = np.array([p[1][1] for p in pts])
      ax.errorbar(x, y, yerr=e, fmt=style, capsize=3,
                  label='dense' if column == 'dense' else METHODS[column].label)
    ax.set_xscale('log')
    ax.set_xlabel(f'{methods_lib.AXES[axis]} (log)')
    ax.set_ylabel('test accuracy (%)')
    ax.set_title(f'{model} on Fashion-MNIST, after the final prune '
                 '(no fine-tuning)', fontsize=9)
    ax.legend(fontsize=8)
  _save(fig, path)


def plot_layer_density(results, path, cases=(('lenet300', 60.0),
                                             ('lenet5', 125.0))):
  """Per-layer density found by GSM and by every other method on its axis
  that ran at the same ratio (seed 0); magnitude + FT's is the dense
  model's global magnitude."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  found = []
  for model, ratio in cases:
    pair = {r['method']: r for r in results if r['model'] == model and
            r['ratio'] == ratio and r['seed'] == 0}
    if 'gsm' in pair and len(pair) > 1:
      found.append((model, ratio, pair))
  if not found:
    return False
  fig, axes = plt.subplots(1, len(found), figsize=(5 * len(found), 3.6),
                           squeeze=False)
  for ax, (model, ratio, pair) in zip(axes[0], found):
    layers = [l for l in pair['gsm']['sparsity']['leaves'] if l['prunable']]
    names = [l['path'].strip("[]'").replace("']['", '.') for l in layers]
    x = np.arange(len(layers))
    methods = [m for m in methods_lib.on_axis('params') if m in pair]
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
      dens = [100 * l['density'] for l in pair[method]['sparsity']['leaves']
              if l['prunable']]
      ax.bar(x + (k - (len(methods) - 1) / 2) * width, dens, width=width,
             label=METHODS[method].label)
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
