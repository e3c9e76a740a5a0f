"""The accuracy harness end to end: ``--quick`` runs every method of
`benchmarks.accuracy.methods` through its sweeps and the comparison on
synthetic data, writes the report and figures, and the notebook renders
them."""

import json
import os
import subprocess
import sys

from nbclient import NotebookClient
import nbformat

from benchmarks.accuracy.methods import METHODS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_benchmark_and_notebook(tmp_path):
  results = tmp_path / 'results_quick'
  subprocess.run(
      [sys.executable, '-m', 'benchmarks.accuracy.run', '--quick', '--jobs',
       '2', '--dataset', 'synthetic', '--results', str(results), '--runs',
       str(tmp_path / 'runs')],
      cwd=ROOT, check=True, env={**os.environ, 'XLA_FLAGS': ''})
  methods = tuple(m for m in METHODS if METHODS[m].quick)
  # What --quick leaves out differs from a record it runs in values alone.
  for m in set(METHODS) - set(methods):
    variant_of = METHODS[METHODS[m].variant_of]
    assert variant_of.quick and set(METHODS[m].config) <= set(
        variant_of.config), m
  names = sorted(p.name for p in results.glob('*.json'))
  assert names == sorted(f'lenet300_{m}_r60_s0.json' for m in methods)
  tuned = sorted(p.name for p in (results / 'tuning').glob('*.json'))
  assert tuned == sorted(f'lenet300_r60_{m}_lr{lr}.json'
                         for m in methods for lr in ('0.01', '0.03'))
  # The smoothed variant ran with the decay of its sweep, on validation,
  # and logged its churn and the prune diagnostic each epoch; the paper's
  # rule has no decay.
  decay_run = json.load(open(results / 'tuning' / 'decay' /
                             'lenet300_r60_d0.99_lr0.02.json'))
  assert decay_run['evaluated_on'] == 'validation'
  smoothed = json.load(open(results / 'lenet300_gsm_smoothed_r60_s0.json'))
  assert smoothed['score_decay'] == 0.99
  assert smoothed['method'] == 'gsm_smoothed'
  assert len(smoothed['entered_per_step']) == 1  # one pruning epoch
  assert 0 <= smoothed['pruned_norm_share'][0] <= 1
  assert json.load(open(results / 'lenet300_gsm_r60_s0.json'))[
      'score_decay'] is None
  # Each method trains with its best lr on validation (at a ratio without
  # a sweep it takes the config's: tests/test_accuracy_plan.py).
  for m in methods:
    sweep = {lr: json.load(open(results / 'tuning' /
                                f'lenet300_r60_{m}_lr{lr:g}.json'))
             for lr in (0.01, 0.03)}
    best = max((lr for lr in sweep if not sweep[lr]['diverged']),
               key=lambda lr: sweep[lr]['pruned_accuracy'])
    assert json.load(open(results / f'lenet300_{m}_r60_s0.json')
                    )['learning_rate'] == best
  evaluated_on = {json.load(open(p))['evaluated_on']
                  for p in (results / 'tuning').glob('*.json')}
  assert evaluated_on == {'validation'}
  assert {json.load(open(p))['evaluated_on']
          for p in results.glob('*.json')} == {'test'}
  md = (tmp_path / 'RESULTS_results_quick.md').read_text()
  assert '| 60× |' in md and 'lottery' in md
  assert '## lenet300: accuracy vs FLOPs reduction' in md  # the structured
  assert 'structured GSM 'in md and 'gradual channels, Taylor' in md
  assert 'learning-rate sweep on a validation split' in md
  assert md.count('| lenet300 | ') >= 3  # one sweep row per method
  assert (results / 'accuracy_vs_ratio.png').stat().st_size > 1000
  assert (results / 'layer_density.png').stat().st_size > 1000

  notebook = nbformat.read(
      os.path.join(ROOT, 'benchmarks', 'notebooks', 'results.ipynb'), 4)
  os.environ['GSM_RESULTS_DIR'] = str(results)
  try:
    NotebookClient(notebook, timeout=300, kernel_name='python3',
                   resources={'metadata': {'path': ROOT}}).execute()
  finally:
    del os.environ['GSM_RESULTS_DIR']
  printed = ''.join(o.get('text', '') for c in notebook.cells
                    if c.cell_type == 'code' for o in c.outputs)
  assert f'{len(methods)} runs in' in printed and '60x' in printed
  assert 'best on validation' in printed and 'gradual_magnitude' in printed
  tables = ''.join(o.get('data', {}).get('text/markdown', '')
                   for c in notebook.cells if c.cell_type == 'code'
                   for o in c.outputs)  # the accuracy tables
  assert tables.count('| 60× |') == 2  # per weight and per FLOPs
  # Churn of both GSM rankings (the quick runs log it) and the decay sweep.
  assert 'GSM, smoothed (decay 0.99)' in tables and '60× GSM:' in tables
  assert '| 0.99 (chosen) |' in tables
  images = [o for c in notebook.cells if c.cell_type == 'code'
            for o in c.outputs if 'image/png' in o.get('data', {})]
  assert len(images) == 2
