"""The accuracy harness: the quick benchmark end to end with its notebook,
the plan's decisions (learning rates, the smoothed decay, dense sources)
and what the report renders.

Long because the harness's plan, runs and rendering are tested together
(each with a small test); when methods become records (#29), split it by
part.
"""

import json
import os
import subprocess
import sys

from nbclient import NotebookClient
import nbformat
import pytest

from benchmarks.accuracy import dense_models
from benchmarks.accuracy import plan
from benchmarks.accuracy import report
from benchmarks.accuracy import results as results_lib
from benchmarks.accuracy import run
from benchmarks.accuracy import sweep_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




def test_quick_benchmark_and_notebook(tmp_path):
  results = tmp_path / 'results_quick'
  subprocess.run(
      [sys.executable, '-m', 'benchmarks.accuracy.run', '--quick', '--dataset',
       'synthetic', '--results', str(results), '--runs', str(tmp_path / 'runs')],
      cwd=ROOT, check=True, env={**os.environ, 'XLA_FLAGS': ''})
  methods = ('gsm', 'magnitude_ft', 'gradual_magnitude', 'gsm_smoothed')
  names = sorted(p.name for p in results.glob('*.json'))
  assert names == sorted(f'lenet300_{m}_r{r}_s0.json'
                         for m in methods for r in ('10', '60'))
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
  # At the swept ratio each method trains with its best lr on validation;
  # at the other, with the config's.
  for m in methods:
    sweep = {lr: json.load(open(results / 'tuning' /
                                f'lenet300_r60_{m}_lr{lr:g}.json'))
             for lr in (0.01, 0.03)}
    best = max((lr for lr in sweep if not sweep[lr]['diverged']),
               key=lambda lr: sweep[lr]['pruned_accuracy'])
    assert json.load(open(results / f'lenet300_{m}_r60_s0.json')
                    )['learning_rate'] == best
    assert json.load(open(results / f'lenet300_{m}_r10_s0.json')
                    )['learning_rate'] == 0.03
  evaluated_on = {json.load(open(p))['evaluated_on']
                  for p in (results / 'tuning').glob('*.json')}
  assert evaluated_on == {'validation'}
  assert {json.load(open(p))['evaluated_on']
          for p in results.glob('*.json')} == {'test'}
  md = (tmp_path / 'RESULTS_results_quick.md').read_text()
  assert '| 60× |' in md and 'lottery' in md
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
  assert '8 runs in' in printed and '60x' in printed
  assert 'best on validation' in printed and 'gradual_magnitude' in printed
  tables = ''.join(o.get('data', {}).get('text/markdown', '')
                   for c in notebook.cells if c.cell_type == 'code'
                   for o in c.outputs)  # the accuracy tables
  assert '| 10× |' in tables and '| 60× |' in tables
  # Churn of both GSM rankings (the quick runs log it) and the decay sweep.
  assert 'GSM, smoothed (decay 0.99)' in tables and '60× GSM:' in tables
  assert '| 0.99 (chosen) |' in tables
  images = [o for c in notebook.cells if c.cell_type == 'code'
            for o in c.outputs if 'image/png' in o.get('data', {})]
  assert len(images) == 2


def test_a_slice_without_its_dense_model_says_which_run_to_do_first(tmp_path):
  with pytest.raises(FileNotFoundError, match='run ratio 10 of this seed'):
    run.run_all(plan.QUICK, str(tmp_path / 'results'), str(tmp_path / 'runs'),
                'synthetic', seeds=[0], ratios=[60.0],
                methods=('magnitude_ft',))
  assert not list((tmp_path / 'results').glob('*.json'))
  with pytest.raises(FileNotFoundError, match='run its GSM run at lr 0.01'):
    run.run_tuning(plan.TUNING_QUICK, plan.QUICK, str(tmp_path / 'results'),
                   str(tmp_path / 'runs'), 'synthetic',
                   methods=('gsm',), learning_rates=[0.03])
  assert not list((tmp_path / 'results' / 'tuning').glob('*.json'))


def test_a_missing_dense_model_is_retrained_only_when_asked(tmp_path):
  runs = tmp_path / 'runs' / 'lenet300' / 's0'
  missing = str(runs / 'gsm_r10')
  with pytest.raises(FileNotFoundError, match='--retrain-missing-dense'):
    dense_models.dense_source(missing, 'lenet300 seed 0', 'ratio 10 of this seed')
  assert dense_models.dense_source(missing, 'w', 'f', retrain=True) == ''  # train here

  def finished_dense(workdir):
    (workdir / 'phase_ends' / 'dense').mkdir(parents=True)
    (workdir / 'phase_results.json').write_text('{"dense": 0.9}')

  (runs / 'gsm_smoothed_r10' / 'phase_ends' / 'dense').mkdir(parents=True)
  finished_dense(runs / 'gsm_smoothed_r60')  # r10's copy is not finished
  assert dense_models.dense_source(missing, 'w', 'f', retrain=True) == str(
      runs / 'gsm_smoothed_r60')  # a sibling's copy of the same seed
  # A run resumed keeps its own dense phase, or its epochs would shift.
  own = runs / 'gsm_smoothed_r125'
  finished_dense(own)
  (own / 'metrics.jsonl').write_text('{"epoch": 1, "phase": "dense"}\n')
  assert dense_models.dense_source(missing, 'w', 'f', retrain=True,
                          workdir=str(own)) == ''
  assert dense_models.dense_source(missing, 'w', 'f', retrain=True,
                          workdir=str(runs / 'gsm_smoothed_r300')) == str(
                              runs / 'gsm_smoothed_r125')
  finished_dense(runs / 'gsm_r10')
  assert dense_models.dense_source(missing, 'w', 'f') == missing


def test_smoothed_decay_is_the_best_on_validation_and_needs_every_point(
    tmp_path):
  results = tmp_path / 'results'
  with pytest.raises(FileNotFoundError, match='--part decay'):
    results_lib.smoothed_score_decay(str(results))
  accuracies = {0.9: 0.85, 0.99: 0.87, 0.999: 0.87}  # a tie: smaller wins
  for decay, acc in accuracies.items():
    path = plan.decay_path(str(results), decay)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
      json.dump({'score_decay': decay, 'pruned_accuracy': acc,
                 'diverged': False}, f)
  assert results_lib.smoothed_score_decay(str(results)) == 0.99
  with open(plan.decay_path(str(results), 0.9), 'w') as f:
    json.dump({'score_decay': 0.9, 'pruned_accuracy': 0.99,
               'diverged': True}, f)  # diverged points are never picked
  assert results_lib.smoothed_score_decay(str(results)) == 0.99


def test_report_leaves_diverged_runs_out_of_the_means_and_says_so():

  def run(method, seed, acc, **extra):
    return dict(model='lenet5', ratio=10.0, method=method, seed=seed,
                dense_accuracy=0.9, accuracy_before_prune=acc,
                pruned_accuracy=acc, epochs={'dense': 1, 'prune': 1}, **extra)

  results = [run('gsm', 0, 0.1, diverged=True), run('gsm', 1, 0.8),
             run('gsm', 2, 0.9, diverged=False),
             run('gradual_magnitude', 0, 0.7)]
  row = results_lib.accuracy_table(results, 'lenet5')[10.0]
  mean, std, n = row['gsm']
  assert (round(mean, 6), n) == (85.0, 2)  # 10% (diverged) left out
  assert row['diverged'] == {'gsm': 1, 'magnitude_ft': 0,
                             'gradual_magnitude': 0, 'gsm_smoothed': 0}
  assert (report.fmt_cell(row['gsm'], 1) ==
          '85.00 ± 7.07 (n=2); diverged in 1 of 3')
  assert report.fmt_cell(None, 2) == 'diverged in 2 of 2'
  assert report.fmt_cell(row['gradual_magnitude'], 0) == '70.00 (n=1)'
  # The table bolds the best method's mean (GSM's 85 over gradual's 70).
  assert report.accuracy_table_lines(results, 'lenet5', with_n=False)[2] == (
      '| 10× | 90.00 ± 0.00 | **85.00 ± 7.07; diverged in 1 of 3** | – | '
      '70.00 (n=1) | – |')
  lines = report.findings_lines(results, {})
  assert any('GSM diverged (non-finite loss and weights) in 1 of 3 seeds'
             in l for l in lines)
  assert any('GSM 85.00%' in l and 'beats the best baseline' in l
             for l in lines)


def test_diagnostics_print_their_question_command_and_loss_curve(tmp_path):
  (tmp_path / 'diagnostics').mkdir()
  (tmp_path / 'diagnostics' / 'd.json').write_text(json.dumps(dict(
      question='Stable at 1e-2?', date='2026-11-21', command='python -m x',
      model='lenet5', method='gsm', ratio=10.0, evaluated_on='test',
      dense_accuracy=0.91, accuracy_before_prune=0.9, pruned_accuracy=0.89,
      final_train_accuracy=0.95, loss_by_epoch=[0.2, 0.15])))
  lines = report.diagnostics_lines(str(tmp_path))
  assert '**Stable at 1e-2?** (2026-11-21)' in lines
  assert '`python -m x`' in lines
  assert any(l.startswith('lenet5 gsm at 10×, on test: dense 91.00%, before '
                          'the prune 90.00%, after it 89.00%')
             and l.endswith('pruning phase: 0.200, 0.150.') for l in lines)


def test_sweep_table_names_diverged_points_and_never_picks_them():

  def point(method, lr, acc, ratio=125.0, **extra):
    return dict(model='lenet5', ratio=ratio, seed=0, method=method,
                learning_rate=lr, accuracy_before_prune=acc,
                pruned_accuracy=acc, **extra)

  tuning = [point('gsm', 0.01, 0.5), point('gsm', 0.03, 0.8),
            point('gsm', 0.1, 0.1, diverged=True),
            point('magnitude_ft', 0.1, 0.1, diverged=True),
            point('gsm', 0.01, 0.7, ratio=10.0),
            point('gsm', 0.03, 0.1, ratio=10.0, diverged=True)]
  assert results_lib.best_learning_rates(tuning) == {
      ('lenet5', 125.0, 'gsm'): (0.03, 0.8),
      ('lenet5', 10.0, 'gsm'): (0.01, 0.7)}
  # A tie goes to the smaller lr, in either order.
  tied = [point('gsm', 0.02, 0.6), point('gsm', 0.01, 0.6)]
  for order in (tied, tied[::-1]):
    assert results_lib.best_learning_rates(order) == {
        ('lenet5', 125.0, 'gsm'): (0.01, 0.6)}
  results = [dict(model='lenet5', ratio=125.0, method='gsm'),  # ran at 0.03
             dict(model='lenet5', ratio=10.0, method='gsm',
                  learning_rate=0.01),
             dict(model='lenet5', ratio=125.0, method='magnitude_ft',
                  learning_rate=0.03)]
  lines = sweep_report.tuning_lines(tuning, results, 0.03)
  assert ('| lenet5 | 125× | GSM | 50.00 (50.00) | **80.00** (80.00) | '
          'diverged |') in lines
  assert '| lenet5 | 10× | GSM | **70.00** (70.00) | diverged | – |' in lines
  assert '| lenet5 | 125× | magnitude + FT | – | – | diverged |' in lines
  assert '- lenet5 125× GSM: best lr 0.03, used in the comparison.' in lines
  assert '- lenet5 10× GSM: best lr 0.01, used in the comparison.' in lines
  assert ('- lenet5 125× magnitude + FT: diverged at every learning rate of '
          'the sweep.') in lines
  assert results_lib.lr_exceptions(results, 0.03) == ['lenet5 10×: GSM 0.01']
  assert sweep_report.best_lr_table_lines(tuning)[2:] == [
      '| lenet5 | 10× | 0.01 | – | – | – |',
      '| lenet5 | 125× | 0.03 | diverged | – | – |']
  tuning.append(point('magnitude_ft', 0.01, 0.6))
  assert sweep_report.best_lr_table_lines(tuning)[3] == (
      '| lenet5 | 125× | 0.03 | 0.01 | – | – |')
  diverged_runs = [dict(model='lenet5', ratio=10.0, method='gsm',
                        learning_rate=0.01, diverged=True),
                   dict(model='lenet5', ratio=30.0, method='gsm',
                        diverged=True)]
  assert report.divergence_lines(diverged_runs, tuning, 0.03) == [
      '- lenet5 10×: GSM at lr 0.01, its best on validation at this ratio. '
      "The sweep's run (seed 0, 5/6 of the training set) did not diverge: "
      '70.00% on validation after the prune. This lr is at the edge of what '
      'GSM trains stably at this ratio.',
      '- lenet5 30×: GSM at lr 0.03 (no sweep at this ratio).']
  # magnitude + FT's best at 125× is now 0.01, its comparison ran at 0.03.
  assert sweep_report.stale_lr_text(results, tuning, 0.03) == (
      ", except where the comparison has not yet been rerun at the sweep's "
      'best: lenet5 125× magnitude + FT (best 0.01, ran at 0.03).')
  assert sweep_report.stale_lr_text(results[:2], tuning, 0.03) == '.'
  results[0]['learning_rate'] = 0.01  # the comparison ignored the sweep
  assert sweep_report.stale_lr_text(results[:2], tuning, 0.03) == (
      ", except where the comparison has not yet been rerun at the sweep's "
      'best: lenet5 125× GSM (best 0.03, ran at 0.01).')
  assert ('- lenet5 125× GSM: best lr 0.03; NOT what the comparison used: '
          'lr 0.01.') in sweep_report.tuning_lines(tuning, results, 0.03)


def test_comparison_takes_the_best_lr_of_the_sweep_at_its_ratio(tmp_path):
  tuning = {'lenet5': (dict(ratio=10.0, seed=0,
                            learning_rates=(0.01, 0.02, 0.03),
                            holdout_fraction=1 / 6),)}
  (tmp_path / 'tuning').mkdir()

  def write_point(lr, acc, diverged):  # as run_tuning writes it
    (tmp_path / 'tuning' / f'lenet5_r10_gsm_lr{lr:g}.json').write_text(
        json.dumps(dict(model='lenet5', ratio=10.0, method='gsm',
                        learning_rate=lr, pruned_accuracy=acc,
                        diverged=diverged)))

  accuracies = {0.01: 0.7, 0.02: 0.8, 0.03: 0.9}
  for lr in (0.01, 0.02):
    write_point(lr, accuracies[lr], False)
  with pytest.raises(FileNotFoundError, match='lenet5_r10_gsm_lr0.03.json is '
                     'missing; run --part tuning first'):
    results_lib.comparison_learning_rate(tuning, str(tmp_path), 'lenet5', 10.0, 'gsm')
  # The most accurate point diverged elsewhere, so it is never picked.
  write_point(0.03, 0.9, True)
  assert results_lib.comparison_learning_rate(tuning, str(tmp_path), 'lenet5', 10.0,
                                      'gsm') == 0.02
  # A ratio without a sweep trains at the config's lr.
  assert results_lib.comparison_learning_rate(tuning, str(tmp_path), 'lenet5', 30.0,
                                      'gsm') == plan.default_learning_rate(
                                          'lenet5') == 0.03
  for lr in (0.01, 0.02):
    write_point(lr, 0.1, True)
  with pytest.raises(ValueError, match='diverged at every lr'):
    results_lib.comparison_learning_rate(tuning, str(tmp_path), 'lenet5', 10.0, 'gsm')
  # A result is reused only if it was trained at the lr asked for.
  path = tmp_path / 'r.json'
  assert not results_lib.has_result(str(path), 0.03, 0.03)
  path.write_text(json.dumps(dict(pruned_accuracy=0.5)))  # before the field
  assert results_lib.has_result(str(path), 0.03, 0.03)
  assert not results_lib.has_result(str(path), 0.01, 0.03)
  path.write_text(json.dumps(dict(learning_rate=0.01)))
  assert results_lib.has_result(str(path), 0.01, 0.03)


def test_the_protocol_is_stated_from_the_config(monkeypatch):
  g = plan.pruning_phase('lenet300')
  assert plan.describe_pruning_phase('lenet300') == (
      f'momentum {g.momentum:g} Nesterov, peak lr {g.learning_rate:g}, '
      f'warm-up {g.warmup_epochs:g} epoch, x0.1 steps, weight decay '
      f'{g.weight_decay:g}')
  g.weight_decay, g.warmup_epochs, g.nesterov = 1e-3, 2, False
  monkeypatch.setattr(plan, 'pruning_phase', lambda model: g)
  assert plan.describe_pruning_phase('lenet300') == (
      f'momentum {g.momentum:g}, peak lr {g.learning_rate:g}, warm-up 2 '
      'epochs, x0.1 steps, weight decay 0.001')
