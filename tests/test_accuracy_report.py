"""What the accuracy report renders: tables with diverged runs left out,
the sweep's tables, diagnostics, and the protocol stated from the config."""

import json

from benchmarks.accuracy import findings
from benchmarks.accuracy import methods
from benchmarks.accuracy import plan
from benchmarks.accuracy import report
from benchmarks.accuracy import results as results_lib
from benchmarks.accuracy import sweep_report


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
  assert row['diverged'] == {**dict.fromkeys(methods.on_axis('params'), 0),
                             'gsm': 1}
  assert (report.fmt_cell(row['gsm'], 1) ==
          '85.00 ± 7.07 (n=2); diverged in 1 of 3')
  assert report.fmt_cell(None, 2) == 'diverged in 2 of 2'
  assert report.fmt_cell(row['gradual_magnitude'], 0) == '70.00 (n=1)'
  # The table bolds the best method's mean (GSM's 85 over gradual's 70).
  assert report.accuracy_table_lines(results, 'lenet5', with_n=False)[2] == (
      '| 10× | 90.00 ± 0.00 | **85.00 ± 7.07; diverged in 1 of 3** | '
      '70.00 (n=1) |')  # no column for the methods with no run
  lines = findings.findings_lines(results, {})
  assert any('GSM diverged (non-finite loss and weights) in 1 of 3 seeds'
             in l for l in lines)
  assert any('GSM 85.00%' in l and 'beats the best baseline' in l
             for l in lines)
  # A variant of one seed beside it has no spread to quote; one run's
  # prune cost is one run's.
  lines = findings.findings_lines(results + [run('gsm_smoothed', 0, 0.86)],
                                  {})
  assert any("GSM, smoothed 86.00% (+1.00 vs GSM, one seed" in l
             for l in lines), lines
  assert '- GSM, smoothed, lenet5 (1 pruning epochs): mean +0.00, largest ' \
      '+0.00 over 1 run.' in lines


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
  # A column for each method with a sweep.
  assert sweep_report.best_lr_table_lines(tuning) == [
      '| model | ratio | GSM | magnitude + FT |', '|---|---:|---:|---:|',
      '| lenet5 | 10× | 0.01 | – |',
      '| lenet5 | 125× | 0.03 | diverged |']
  tuning.append(point('magnitude_ft', 0.01, 0.6))
  assert sweep_report.best_lr_table_lines(tuning)[3] == (
      '| lenet5 | 125× | 0.03 | 0.01 |')
  diverged_runs = [dict(model='lenet5', ratio=10.0, method='gsm',
                        learning_rate=0.01, diverged=True),
                   dict(model='lenet5', ratio=30.0, method='gsm',
                        diverged=True)]
  assert findings.divergence_lines(diverged_runs, tuning, 0.03) == [
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


def test_the_slim_table_and_figure_read_each_runs_slim_model(tmp_path):
  from benchmarks.accuracy import slim_report  # pylint: disable=import-outside-toplevel

  def run(method, seed, acc, speedup, fc1=81):
    return dict(model='lenet300', ratio=4.0, method=method, seed=seed,
                pruned_accuracy=acc, diverged=False,
                slim={'channels': [["['fc1']", 300, fc1], ["['fc2']", 100, 28]],
                      'params': [266610.0, 66652.5],
                      'flops': [532400.0, 133100.0],
                      'inference': {'batch': 256, 'speedup': speedup}})

  results = [run('structured_gsm', 1, 0.88, 3.0, fc1=90),
             run('structured_gsm', 0, 0.86, 2.0),
             run('structured_gsm', 2, 0.87, 2.5),
             run('filter_magnitude_ft', 0, 0.85, 2.2),
             dict(run('gsm', 0, 0.1, 9.0), diverged=True)]
  lines = slim_report.slim_lines(results)
  assert lines[-3:] == [
      '| lenet300 | structured GSM | 4× | 87.00 ± 1.00 (n=3) | 25.0% | 25.0% '
      '| fc1 81/300, fc2 28/100 | 2.50× (2.00–3.00) |',
      '| lenet300 | filter magnitude + FT | 4× | 85.00 (n=1) | 25.0% '
      '| 25.0% | fc1 81/300, fc2 28/100 | 2.20× (2.20–2.20) |', '']
  assert not any('| GSM |' in l for l in lines)  # diverged: left out
  assert slim_report.plot_speedup(results, str(tmp_path / 's.png'))
  assert (tmp_path / 's.png').stat().st_size > 1000
  assert slim_report.slim_lines(results[-1:]) == []
