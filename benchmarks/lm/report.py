"""The language-model benchmark's tables, generated from its JSON results.

``python -m benchmarks.lm.report [--results benchmarks/results/lm]`` prints
the one-shot table and the training table (test perplexity, mean ± std over
seeds, the number of seeds beside each cell where it is not 3) in Markdown.
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
  sparsities = list(methods_lib.SPARSITIES)
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


def generated(results_dir: str) -> str:
  """The tables, as RESULTS.md holds them below its marker."""
  parts = [MARKER, '', '### One shot: test perplexity (bytes)', '',
           one_shot_table(results_dir), '',
           '### Validation perplexity', '',
           one_shot_table(results_dir, 'validation_perplexity')]
  if load(results_dir, 'train'):
    parts += ['', '### Trained: test perplexity (bytes)', '',
              one_shot_table(results_dir, part='train')]
  return '\n'.join(parts) + '\n'


def write(path: str, results_dir: str) -> None:
  """Replaces what ``path`` holds below `MARKER` with the tables (the
  hand-written text above it stays), through a temporary file."""
  text = open(path).read() if os.path.exists(path) else ''
  head = text.split(MARKER)[0]
  with open(path + '.tmp', 'w') as f:
    f.write(head + generated(results_dir))
  os.replace(path + '.tmp', path)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--results', default='benchmarks/results/lm')
  parser.add_argument('--write', action='store_true',
                      help='write the tables into benchmarks/lm/RESULTS.md')
  args = parser.parse_args(argv)
  if args.write:
    write(os.path.join(os.path.dirname(__file__), 'RESULTS.md'), args.results)
  else:
    print(generated(args.results))


if __name__ == '__main__':
  main()
