"""The accuracy harness's plan and decisions: which runs, in which order,
from which dense model, at which lr and chosen value; and that a method is
one record (`benchmarks.accuracy.methods`) the plan, the runs, the tables
and the figures read."""

import json
import os

import pytest

from benchmarks.accuracy import figures
from benchmarks.accuracy import findings
from benchmarks.accuracy import methods
from benchmarks.accuracy import plan
from benchmarks.accuracy import report
from benchmarks.accuracy import results as results_lib
from benchmarks.accuracy import run
from benchmarks.accuracy import runs as runs_lib
from benchmarks.accuracy import sweep_report

# The quick plan at two ratios.
TWO_RATIOS = {'lenet300': dict(plan.QUICK['lenet300'], ratios=(10.0, 60.0))}


def test_a_slice_without_its_dense_model_says_which_run_to_do_first(
    tmp_path, monkeypatch):
  monkeypatch.setattr(plan, 'TUNING_QUICK', {})  # every ratio at the config's lr
  results, runs = str(tmp_path / 'results'), str(tmp_path / 'runs')
  with pytest.raises(FileNotFoundError, match='run ratio 10 of this seed'):
    run.run_each(runs_lib.comparison_runs(
        TWO_RATIOS, results, runs, seeds=[0], ratios=[60.0],
        methods=('magnitude_ft',), quick=True), TWO_RATIOS, 'synthetic')
  assert not list((tmp_path / 'results').glob('*.json'))
  monkeypatch.undo()
  with pytest.raises(FileNotFoundError, match='run its GSM run at lr 0.01'):
    run.run_each(runs_lib.tuning_runs(plan.QUICK, results, runs, methods=('gsm',),
                                 learning_rates=[0.03], quick=True),
                 plan.QUICK, 'synthetic')
  assert not list((tmp_path / 'results' / 'tuning').glob('*.json'))


def write_choice(results_dir, method, value, accuracy, diverged=False):
  """A `methods.Choice` sweep point, as `run.choice_run` writes it."""
  path = plan.choice_path(results_dir, method, value)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  field = methods.METHODS[method].choice.field
  with open(path, 'w') as f:
    json.dump({field: value, 'pruned_accuracy': accuracy,
               'diverged': diverged}, f)


def test_the_comparison_runs_each_method_from_one_dense_model_per_seed(
    tmp_path, monkeypatch):
  monkeypatch.setattr(plan, 'TUNING_QUICK', {})
  results, runs = str(tmp_path / 'results'), str(tmp_path / 'runs')
  with pytest.raises(FileNotFoundError, match='run --part choices first'):
    runs_lib.comparison_runs(TWO_RATIOS, results, runs, quick=True)
  write_choice(results, 'gsm_smoothed', 0.99, 0.8)
  todo = runs_lib.comparison_runs(TWO_RATIOS, results, runs, quick=True)
  assert [(r.method, r.ratio) for r in todo] == [
      (m, ratio) for ratio in (10.0, 60.0) for m in methods.METHODS]
  first, rest = todo[0], todo[1:]
  assert (first.method, first.ratio, first.dense) == ('gsm', 10.0, None)
  assert {r.dense[0] for r in rest} == {first.workdir}
  assert len({r.workdir for r in todo}) == len({r.path for r in todo}) == (
      2 * len(methods.METHODS))
  smoothed = next(r for r in todo if r.method == 'gsm_smoothed')
  assert smoothed.overrides == {'gsm.score_decay': 0.99}
  assert all(r.overrides == {} for r in todo if r.method != 'gsm_smoothed')
  # Its config is the model's with the record's fields and the choice set.
  config = plan.make_config('lenet300', plan.QUICK['lenet300'],
                            'gsm_smoothed', 60.0, 0, '', None,
                            overrides=smoothed.overrides)
  assert (config.pruning, config.gsm.score_decay) == ('gsm', 0.99)
  assert plan.make_config('lenet300', plan.QUICK['lenet300'], 'magnitude_ft',
                          60.0, 0, '', None).pruning == 'magnitude_ft'
  # Lottery tickets only where the record asks for them, at LOTTERY's ratios.
  assert [run.run_config(r, TWO_RATIOS, 'synthetic').lottery
          for r in todo[:1]] == [False]  # 10x is not a LOTTERY ratio
  assert plan.make_config('lenet300', plan.QUICK['lenet300'], 'gsm', 60.0, 0,
                          '', None).lottery
  assert not plan.make_config('lenet300', plan.QUICK['lenet300'],
                              'magnitude_ft', 60.0, 0, '', None).lottery


def test_a_tuning_sweep_trains_its_dense_model_first(tmp_path):
  todo = runs_lib.tuning_runs(plan.QUICK, str(tmp_path / 'r'), str(tmp_path / 'w'),
                         methods=('magnitude_ft', 'gsm'), quick=True)
  assert [(r.method, r.learning_rate) for r in todo] == [
      ('gsm', 0.01), ('magnitude_ft', 0.01), ('magnitude_ft', 0.03),
      ('gsm', 0.03)]
  assert todo[0].dense is None
  assert {r.dense[0] for r in todo[1:]} == {todo[0].workdir}
  assert {r.holdout_fraction for r in todo} == {1 / 6}
  assert {os.path.basename(r.path) for r in todo} == {
      f'lenet300_r60_{m}_lr{lr}.json' for m in ('gsm', 'magnitude_ft')
      for lr in ('0.01', '0.03')}


def test_a_chosen_value_is_the_best_on_validation_and_needs_every_point(
    tmp_path):
  results = str(tmp_path / 'results')
  values = methods.METHODS['gsm_smoothed'].choice.values
  with pytest.raises(FileNotFoundError, match='--part choices'):
    results_lib.chosen_value(results, 'gsm_smoothed', values)
  accuracies = {0.9: 0.85, 0.99: 0.87, 0.999: 0.87}  # a tie: smaller wins
  for decay, acc in accuracies.items():
    write_choice(results, 'gsm_smoothed', decay, acc)
  assert results_lib.chosen_value(results, 'gsm_smoothed', values) == 0.99
  write_choice(results, 'gsm_smoothed', 0.9, 0.99, diverged=True)
  assert results_lib.chosen_value(results, 'gsm_smoothed', values) == 0.99
  assert [r['score_decay'] for r in results_lib.load_choice(
      results, 'gsm_smoothed')] == [0.9, 0.99, 0.999]  # by value
  assert plan.choice_path(results, 'gsm_smoothed', 0.99).endswith(
      os.path.join('tuning', 'decay', 'lenet300_r60_d0.99_lr0.02.json'))


def test_comparison_takes_the_best_lr_of_the_sweep_at_its_ratio(tmp_path):
  tuning = {'lenet5': (methods.sweep(10.0, (0.01, 0.02, 0.03)),)}
  (tmp_path / 'tuning').mkdir()

  def write_point(lr, acc, diverged):  # as a tuning run writes it
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


def test_a_method_is_one_record(tmp_path, monkeypatch):
  """A new record, and nothing else, puts a method in the plan, the runs,
  the tables, the findings, the Fairness section and the figures."""
  record = methods.Method(
      'gsm_wd', 'GSM, decay 1e-3', {'pruning': 'gsm', 'gsm.weight_decay': 1e-3},
      tuning={}, kind='gsm', variant_of='gsm', marker='x-',
      fairness='GSM with weight decay {c.gsm.weight_decay:g}.')
  monkeypatch.setitem(methods.METHODS, record.name, record)
  monkeypatch.setattr(plan, 'TUNING_QUICK', {})
  config = plan.make_config('lenet300', plan.QUICK['lenet300'], 'gsm_wd',
                            60.0, 0, '', None)
  assert (config.pruning, config.gsm.weight_decay) == ('gsm', 1e-3)
  write_choice(str(tmp_path), 'gsm_smoothed', 0.99, 0.8)
  todo = runs_lib.comparison_runs(plan.QUICK, str(tmp_path), str(tmp_path / 'w'),
                             quick=True)
  assert [r.method for r in todo if r.ratio == 60.0][-1] == 'gsm_wd'

  def result(method, acc, ratio=60.0):
    return dict(model='lenet300', ratio=ratio, method=method, seed=0,
                dense_accuracy=0.9, accuracy_before_prune=acc,
                pruned_accuracy=acc, epochs={'dense': 1, 'prune': 1},
                learning_rate=0.03, kept_weights=4436,
                sparsity={'leaves': [{'path': "['fc1']['kernel']",
                                      'prunable': True, 'density': 0.01}]})

  results = [result('gsm', 0.8), result('magnitude_ft', 0.7),
             result('gsm_wd', 0.85)]
  header = report.accuracy_table_lines(results, 'lenet300')[0]
  # A column for each method that ran, the new one's last.
  assert header == '| ratio | dense | GSM | magnitude + FT | GSM, decay 1e-3 |'
  assert report.accuracy_table_lines(results, 'lenet300')[2].endswith(
      '| 70.00 (n=1) | **85.00 (n=1)** |')
  assert any('GSM, decay 1e-3 85.00% (+5.00 vs GSM' in l
             for l in findings.findings_lines(results, {}))
  assert any('GSM, decay 1e-3, lenet300 (1 pruning epochs)' in l
             for l in findings.findings_lines(results, {}))
  assert '- GSM with weight decay 0.001.' in report.fairness_lines(
      str(tmp_path), results, 0.03, [])
  swept = [dict(result('gsm', 0.8), learning_rate=0.01),
           dict(result('gsm_wd', 0.85), learning_rate=0.02)]
  assert sweep_report.best_lr_table_lines(swept)[::2] == [
      '| model | ratio | GSM | GSM, decay 1e-3 |', '| lenet300 | 60× | 0.01 | 0.02 |']
  assert figures.plot_layer_density(results, str(tmp_path / 'd.png'),
                                    cases=(('lenet300', 60.0),))
  figures.plot_accuracy(results, str(tmp_path / 'a.png'))
  assert (tmp_path / 'a.png').stat().st_size > 1000


def test_a_per_model_value_sets_each_models_config_and_fairness_line(
    tmp_path, monkeypatch):
  record = methods.Method(
      'gsm_wd', 'GSM, decay', {'pruning': 'gsm', 'gsm.weight_decay':
                               methods.PerModel(lenet300=1e-3, lenet5=2e-3)},
      tuning={}, kind='gsm', fairness='GSM, decay {c.gsm.weight_decay:g}.')
  monkeypatch.setitem(methods.METHODS, record.name, record)
  decays = [plan.make_config(m, plan.QUICK['lenet300'], 'gsm_wd', 4.0, 0, '',
                             None).gsm.weight_decay
            for m in ('lenet300', 'lenet5')]
  assert decays == [1e-3, 2e-3]
  results = [dict(model=m, method='gsm_wd') for m in ('lenet300', 'lenet5')]
  assert ('- lenet300: GSM, decay 0.001. lenet5: GSM, decay 0.002.'
          in report.fairness_lines(str(tmp_path), results, 0.03, []))
  assert '- GSM, decay 0.001.' in report.fairness_lines(
      str(tmp_path), results[:1], 0.03, [])


def test_methods_on_another_axis_get_their_own_table(monkeypatch, tmp_path):
  record = methods.Method('channels', 'channels', {'pruning': 'gsm'}, {},
                          fairness='', axis='flops',
                          ratios={'lenet5': (2.0, 4.0)})
  monkeypatch.setitem(methods.METHODS, record.name, record)
  budget = dict(plan.FULL['lenet5'], ratios=(7.0,), seeds=(0,))
  todo = runs_lib.comparison_runs({'lenet5': budget}, str(tmp_path),
                                  str(tmp_path / 'w'),
                                  methods=('gsm', 'channels'))
  assert [(r.method, r.ratio) for r in todo] == [
      ('gsm', 7.0), ('channels', 2.0), ('channels', 4.0)]
  assert {r.dense[0] for r in todo[1:]} == {todo[0].workdir}
  quick = runs_lib.comparison_runs({'lenet5': budget}, str(tmp_path),
                                   str(tmp_path / 'w'), quick=True,
                                   methods=('channels',))
  assert [r.ratio for r in quick] == [7.0]  # --quick: the plan's ratios
  assert plan.method_ratios('channels', 'lenet300', budget) == ()  # unlisted
  results = [dict(model='lenet5', ratio=r, method=m, seed=0,
                  dense_accuracy=0.9, pruned_accuracy=0.8)
             for m, r in (('gsm', 10.0), ('channels', 4.0))]
  assert results_lib.axes(results, 'lenet5') == ['params', 'flops']
  params = report.accuracy_table_lines(results, 'lenet5')
  flops = report.accuracy_table_lines(results, 'lenet5', axis='flops')
  assert [l.split(' |')[0] for l in params[2:]] == ['| 10×']
  assert flops[0] == '| ratio | dense | channels |'  # the methods that ran
  assert len(flops) == 3 and flops[2].startswith('| 4× | 90.00 (n=1) |')
  assert flops[2].endswith('| **80.00 (n=1)** |')


def test_gsm_warmup_keeps_gradual_magnitudes_schedule():
  # The ratio warm-up ends where gradual magnitude reaches its sparsity,
  # at every budget of epochs (the full plan's and the quick one's).
  for model, budget in (('lenet300', plan.FULL['lenet300']),
                        ('lenet5', plan.FULL['lenet5']),
                        ('lenet300', plan.QUICK['lenet300'])):
    config = plan.make_config(model, budget, 'gsm_warmup', 60.0, 0, '', None)
    assert config.gsm.epochs == budget['prune_epochs']
    assert config.gsm.ratio_warmup_epochs == round(
        config.gradual.end_fraction * budget['prune_epochs'])
    assert (config.pruning, config.gsm.score_decay) == ('gsm', 0.9)
  assert plan.make_config('lenet5', plan.FULL['lenet5'], 'gsm_warmup', 60.0,
                          0, '', None).gsm.passive_decay == 1e-2


def test_a_ratio_slice_needs_only_the_sweeps_of_its_ratios(tmp_path):
  # --ratios 125 --part comparison runs once 125x is swept, though the
  # method's other ratios are not yet (their lr is not asked for).
  results = tmp_path / 'results'
  (results / 'tuning').mkdir(parents=True)
  def write_point(method, ratio, lr, acc):
    (results / 'tuning' / f'lenet5_r{ratio:g}_{method}_lr{lr:g}.json'
     ).write_text(json.dumps(dict(
         model='lenet5', ratio=ratio, method=method, learning_rate=lr,
         pruned_accuracy=acc, diverged=False)))
  method = 'gsm_warmup_smoother'
  for m in (method, 'gsm'):  # gsm's sweep at 125x: the dense model's lr
    sweep = next(s for s in plan.tuning_for(m, False)['lenet5']
                 if s['ratio'] == 125.0)
    for lr in sweep['learning_rates']:
      write_point(m, 125.0, lr, 0.9 if lr == 0.02 else 0.8)
  full = {'lenet5': plan.FULL['lenet5']}
  todo = runs_lib.comparison_runs(full, str(results), str(tmp_path / 'runs'),
                                  ratios=[125.0], methods=(method,))
  assert [(r.ratio, r.seed, r.learning_rate) for r in todo] == [
      (125.0, s, 0.02) for s in (0, 1, 2)]
  with pytest.raises(FileNotFoundError, match='lenet5_r300_gsm_warmup_smoother'):
    runs_lib.comparison_runs(full, str(results), str(tmp_path / 'runs'),
                             ratios=[125.0, 300.0], methods=(method,))
