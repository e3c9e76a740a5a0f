"""How much does GSM's active set churn, and does a smoothed ranking calm it?

Usage: python -m research.churn.churn [--results research/churn/results]

Runs the paper's rule (GSM ranking |g * w|) in the setting of the accuracy
benchmark's decay sweep (`gsm_smoothed`'s `Choice` in
`benchmarks.accuracy.methods`: LeNet-300
at 60x, lr 2e-2, seed 0, evaluated on the validation split, from the same
dense model), logging the weights entering the active set each step and the
share of the kernels' norm the final prune would remove, then prints them
beside the sweep's smoothed runs (``score_decay`` 0.9, 0.99, 0.999).
"""

import argparse
import json
import os

from benchmarks.accuracy import plan as plan_lib
from benchmarks.accuracy import results as results_lib
from benchmarks.accuracy import run as run_lib
from benchmarks.accuracy import runs as runs_lib
from benchmarks.accuracy.methods import METHODS

BENCHMARK_RESULTS = os.path.join(os.path.dirname(__file__), '..', '..',
                                 'benchmarks', 'results', 'accuracy')
EPOCHS_SHOWN = (1, 5, 10, 20, 40, 60)


def run_paper_rule(results_dir, runs_dir):
  """The paper's rule in the decay sweep's setting (skipped if done)."""
  s = METHODS['gsm_smoothed'].choice
  path = os.path.join(results_dir, f'{s.model}_r{s.ratio:g}_gsm_lr'
                      f'{s.learning_rate:g}_validation.json')
  # The decay sweep's run with the paper's rule: method 'gsm', no override.
  run = runs_lib.choice_run('gsm_smoothed', 0.0, results_dir, runs_dir)._replace(
      title="the paper's rule in the decay sweep's setting", method='gsm',
      path=path, workdir=os.path.join(runs_dir, 'churn', 'gsm'),
      overrides={})
  run_lib.run_each([run], plan_lib.FULL, retrain_dense=True)
  return path


def table_lines(runs):
  """Markdown: churn and the prune's share by epoch, and the accuracies."""
  q = runs[0]['kept_weights']
  head = ' | '.join(f'ep. {e}' for e in EPOCHS_SHOWN)
  lines = [f'| ranking | entered the active set per step (of Q = {q:,}): '
           f'{head} | prune would remove, end | before prune | after prune |',
           '|---|' + '---:|' * (len(EPOCHS_SHOWN) + 3)]
  for r in runs:
    name = ('paper, \\|g·w\\|' if r['score_decay'] is None else
            f"smoothed, decay {r['score_decay']:g}")
    cells = [f"{r['entered_per_step'][e - 1]:,.0f}" for e in EPOCHS_SHOWN]
    lines.append(f"| {name} | " + ' | '.join(cells) +
                 f" | {100 * r['pruned_norm_share'][-1]:.1f}% | "
                 f"{100 * r['accuracy_before_prune']:.2f}% | "
                 f"{100 * r['pruned_accuracy']:.2f}% |")
  return lines


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--results', default=os.path.join(
      os.path.dirname(__file__), 'results'))
  parser.add_argument('--runs', default=os.path.join('runs', 'benchmarks'))
  args = parser.parse_args()
  os.makedirs(args.results, exist_ok=True)
  with open(run_paper_rule(args.results, args.runs)) as f:
    runs = [json.load(f)]
  runs += sorted(results_lib.load_choice(BENCHMARK_RESULTS, 'gsm_smoothed'),
                 key=lambda r: r['score_decay'])
  print('\n'.join(table_lines(runs)))


if __name__ == '__main__':
  main()
