"""Markdown tables of the speed benchmarks' JSON files."""

import json
import os

TRAIN_STEP_FILES = ('train_step.json', 'train_step_peak_lr.json')


def speed_lines(results_dir):
  """Markdown for the speed JSON files written by the speed benchmarks."""
  lines = []
  path = os.path.join(results_dir, 'step_overhead.json')
  if os.path.exists(path):
    data = json.load(open(path))
    methods = [m for m in data['rows'][0]['seconds'] if m != 'sgd']
    lines += ['', '## Speed: optimizer step, GSM vs optax.sgd', '',
              '`python -m benchmarks.speed.step_overhead --json '
              'benchmarks/results/speed/step_overhead.json` (median, after '
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
              '', '`python -m benchmarks.speed.train_step --json '
              'benchmarks/results/speed/train_step.json` and, 468 steps into the '
              'pruning phase (past its one-epoch learning-rate warm-up), '
              '`python -m benchmarks.speed.train_step --pruning-steps 468 --json '
              'benchmarks/results/speed/train_step_peak_lr.json` (batch 256 of '
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
