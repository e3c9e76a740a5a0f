"""The language-model benchmark's tables, generated from its JSON results.

``python -m benchmarks.lm.report [--results benchmarks/results/lm]`` prints
the one-shot table and the training table (test perplexity, mean ± std over
seeds, the number of seeds beside each cell where it is not 3), the
learning-rate sweeps (validation perplexity) and the slim models' speed in
Markdown; ``--write`` puts them into RESULTS.md and draws the figure of
perplexity against sparsity beside the results.
"""

import argparse
import glob
import json
import os

import numpy as np

from benchmarks.lm import methods as methods_lib


def load(results_dir: str, part: str = 'oneshot') -> list[dict]:
  return [json.load(open(p)) for p in sorted(glob.glob(
      os.path.join(results_dir, part, '*.json')))]


def cell(values: list[float]) -> str:
  if not values:
    return ''
  mean = float(np.mean(values))
  if len(values) == 1:
    return f'{mean:.3f} (1 seed)'
  text = f'{mean:.3f} ± {float(np.std(values, ddof=1)):.3f}'
  return text if len(values) == 3 else f'{text} ({len(values)} seeds)'


def one_shot_table(results_dir: str, metric: str = 'test_perplexity',
                   part: str = 'oneshot') -> str:
  """The table of a part (``'oneshot'`` or ``'train'``): a row a method,
  a column a sparsity."""
  runs = load(results_dir, part)
  dense = json.load(open(os.path.join(results_dir, 'dense.json')))
  sparsities = [s for s in methods_lib.SPARSITIES
                if any(r['sparsity'] == s for r in runs)]
  lines = ['| method | ' + ' | '.join(sparsities) + ' |',
           '|---|' + '---:|' * len(sparsities),
           f"| dense | {dense[metric]:.3f} |" + ' |' * (len(sparsities) - 1)]
  table = methods_lib.METHODS if part == 'oneshot' else methods_lib.TRAINING
  for name, method in table.items():
    row = []
    for s in sparsities:
      row.append(cell([r[metric] for r in runs if r['method'] == name and
                       r['sparsity'] == s]))
    if any(row):
      lines.append(f'| {method.label} | ' + ' | '.join(row) + ' |')
  return '\n'.join(lines)


MARKER = '<!-- Generated below from the JSON results: python -m benchmarks.lm.report --write -->'


def sweep_table(results_dir: str) -> str:
  """Validation perplexity of every training method at every swept lr (a
  row a method and sweep sparsity), the chosen one in bold."""
  runs = load(results_dir, 'sweep')
  rates = sorted({r['learning_rate'] for r in runs})
  lines = ['| method | swept at | ' + ' | '.join(f'lr {r:g}' for r in rates)
           + ' |', '|---|---|' + '---:|' * len(rates)]
  for name, method in methods_lib.TRAINING.items():
    for at in dict.fromkeys(methods_lib.SWEEP_AT.values()):
      row = {r['learning_rate']: r['validation_perplexity'] for r in runs
             if r['method'] == name and r['sparsity'] == at}
      if not row:
        continue
      best = min(row, key=row.get)
      cells = [('' if lr not in row else f'**{row[lr]:.3f}**' if lr == best
                else f'{row[lr]:.3f}') for lr in rates]
      lines.append(f'| {method.label} | {at} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def speedup(values: list[float]) -> str:
  text = f'{np.mean(values):.2f}×'
  return text + (f' ± {np.std(values, ddof=1):.2f}' if len(values) > 1
                 else '')


def slim_table(results_dir: str) -> str:
  """The structured rows' slim models: FLOPs and parameters kept, and the
  speed-up over the dense model at batch 1 and 32 (mean ± std over seeds;
  each measured alternated in one process)."""
  runs = [r for part in ('oneshot', 'train') for r in load(results_dir, part)
          if 'slim' in r]
  lines = ['| method | target | FLOPs kept | params kept | test perplexity '
           '| speed-up, batch 1 | speed-up, batch 32 |',
           '|---|---|---:|---:|---:|---:|---:|']
  for table in (methods_lib.METHODS, methods_lib.TRAINING):
    for name, method in table.items():
      for s in methods_lib.SPARSITIES:
        mine = [r for r in runs if r['method'] == name and r['sparsity'] == s]
        if not mine:
          continue
        fl = np.mean([r['slim']['flops'][1] / r['slim']['flops'][0]
                      for r in mine])
        pa = np.mean([r['slim']['params'][1] / r['slim']['params'][0]
                      for r in mine])
        speed = [speedup([r['slim']['speedup'][b] for r in mine])
                 for b in ('1', '32')]
        label = method.label + (' (one shot)' if table is methods_lib.METHODS
                                else '')
        lines.append(f'| {label} | {s} | {fl:.3f} | {pa:.3f} | '
                     f"{cell([r['test_perplexity'] for r in mine])} | "
                     + ' | '.join(speed) + ' |')
  return '\n'.join(lines)


def plot(results_dir: str, path: str) -> bool:
  """Test perplexity against sparsity (50%, 70%; N:M at its density),
  one line a method, mean and std over seeds. False if nothing to draw."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  drawn = False
  colors = plt.get_cmap('tab20').colors
  for ax, kinds in zip(axes, (('50%', '70%'), ('2:4', '4:8'))):
    lines = [(part, table, name, method) for part, table in (
        ('oneshot', methods_lib.METHODS), ('train', methods_lib.TRAINING))
             for name, method in table.items()]
    for color, (part, _, name, method) in zip(colors, lines):
      runs = load(results_dir, part)
      pts = [(k, [r['test_perplexity'] for r in runs
                  if r['method'] == name and r['sparsity'] == k])
             for k in kinds]
      pts = [(k, v) for k, v in pts if v]
      if not pts:
        continue
      drawn = True
      ax.errorbar([k for k, _ in pts], [np.mean(v) for _, v in pts],
                  yerr=[np.std(v) for _, v in pts], capsize=3,
                  fmt='o--' if part == 'oneshot' else 's-', color=color,
                  label=method.label + (' (one shot)' if part == 'oneshot'
                                        else ''))
    ax.set_yscale('log')
    ax.set_xlabel('sparsity of the blocks\' kernels')
    ax.set_ylabel('test perplexity (bytes, log)')
  for ax in axes:
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=6)
  fig.suptitle('examples/lm GPT on the King James Version', fontsize=9)
  fig.tight_layout()
  if drawn:
    fig.savefig(path + '.tmp.png', dpi=110)
    os.replace(path + '.tmp.png', path)
  plt.close(fig)
  return drawn


FIGURE = 'perplexity_vs_sparsity.png'


def generated(results_dir: str) -> str:
  """The tables, as RESULTS.md holds them below its marker."""
  parts = [MARKER, '', '### One shot: test perplexity (bytes)', '',
           one_shot_table(results_dir), '',
           '### Validation perplexity', '',
           one_shot_table(results_dir, 'validation_perplexity')]
  if load(results_dir, 'sweep'):
    parts += ['', '### Learning-rate sweeps: validation perplexity (seed 0)',
              '', sweep_table(results_dir)]
  if load(results_dir, 'train'):
    parts += ['', '### Trained: test perplexity (bytes)', '',
              one_shot_table(results_dir, part='train')]
  if any('slim' in r for p in ('oneshot', 'train')
         for r in load(results_dir, p)):
    parts += ['', '### Structured: the slim models', '',
              slim_table(results_dir)]
  if os.path.exists(os.path.join(results_dir, FIGURE)):
    parts += ['', f'![perplexity against sparsity](../results/lm/{FIGURE})']
  return '\n'.join(parts) + '\n'


def write(path: str, results_dir: str) -> None:
  """Replaces what ``path`` holds below `MARKER` with the tables (the
  hand-written text above it stays), through a temporary file."""
  text = open(path).read() if os.path.exists(path) else ''
  head = text.split(MARKER)[0]
  with open(path + '.tmp', 'w') as f:
    f.write(head + generated(results_dir))
  os.replace(path + '.tmp', path)


# The README's short table: (part, method) rows, sparsity columns.
README_ROWS = (('train', 'magnitude_ft'), ('train', 'sparsegpt_ft'),
               ('train', 'gradual'), ('train', 'gsm'))
README_COLUMNS = ('50%', '70%', '2:4', '4:8', '1.5x FLOPs', '2x FLOPs')


def readme_table(results_dir: str) -> str:
  """The README's table: test perplexity, the mean over seeds (two
  decimals), the best of each column in bold, and the largest std."""
  runs = {part: load(results_dir, part) for part in ('oneshot', 'train')}
  dense = json.load(open(os.path.join(results_dir, 'dense.json')))
  means, stds = {}, []
  for part, name in README_ROWS:
    for s in README_COLUMNS:
      values = [r['test_perplexity'] for r in runs[part]
                if r['method'] == name and r['sparsity'] == s]
      if values:
        means[part, name, s] = float(np.mean(values))
        if len(values) > 1:
          stds.append(float(np.std(values, ddof=1)))
  best = {s: min((v for (_, _, c), v in means.items() if c == s),
                 default=None) for s in README_COLUMNS}
  lines = [f"| dense {dense['test_perplexity']:.2f} | "
           + ' | '.join(README_COLUMNS) + ' |',
           '|---|' + '---:|' * len(README_COLUMNS)]
  for part, name in README_ROWS:
    table = methods_lib.METHODS if part == 'oneshot' else methods_lib.TRAINING
    label = table[name].label + (' (one shot)' if part == 'oneshot' else '')
    cells = []
    for s in README_COLUMNS:
      v = means.get((part, name, s))
      text = '–' if v is None else f'{v:.2f}'
      cells.append(f'**{text}**' if v is not None and v == best[s] else text)
    lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + (f'\n\nLargest std over seeds: {max(stds):.3f}.'
                             if stds else '')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--results', default='benchmarks/results/lm')
  parser.add_argument('--write', action='store_true',
                      help='write the tables into benchmarks/lm/RESULTS.md')
  parser.add_argument('--readme', action='store_true',
                      help="print the README's short table")
  args = parser.parse_args(argv)
  if args.readme:
    print(readme_table(args.results))
  elif args.write:
    plot(args.results, os.path.join(args.results, FIGURE))
    write(os.path.join(os.path.dirname(__file__), 'RESULTS.md'), args.results)
  else:
    print(generated(args.results))


if __name__ == '__main__':
  main()
