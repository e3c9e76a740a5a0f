"""The language-model benchmark's quick mode: the loop runs every kind of
run, writes a JSON each, skips what it has, and the table reads them."""

import json

from benchmarks.lm import methods
from benchmarks.lm import report
from benchmarks.lm import run


def test_quick_benchmark_writes_results_and_a_table(tmp_path, capsys):
  results, workdir = tmp_path / 'r', tmp_path / 'w'
  argv = ['--quick', '--results', str(results), '--workdir', str(workdir),
          '--seeds', '0', '--sparsities', '50%,2:4',
          '--methods', 'magnitude,wanda,sparsegpt,wanda_global']
  run.main(argv)
  files = sorted(p.name for p in (results / 'oneshot').glob('*.json'))
  assert files == sorted([
      'magnitude_50pct_s0.json', 'wanda_50pct_s0.json',
      'sparsegpt_50pct_s0.json', 'wanda_global_50pct_s0.json',
      'magnitude_2of4_s0.json', 'wanda_2of4_s0.json',
      'sparsegpt_2of4_s0.json'])  # no global allocation with N:M
  dense = json.loads((results / 'dense.json').read_text())
  for name in files:
    r = json.loads((results / 'oneshot' / name).read_text())
    assert r['test_perplexity'] > 1.0 and r['seconds'] > 0
    # Every block kernel pruned (4 a block, 2 blocks), to the target.
    assert len(r['kept']) == 8
    kept = sum(k for k, _ in r['kept'].values())
    half = sum(n for _, n in r['kept'].values()) // 2
    if '2of4' in name:
      assert kept == half
    else:  # SparseGPT prunes one more a block, as the reference
      assert abs(kept - half) <= half // 100, (name, kept, half)
  assert dense['test_perplexity'] < dense['test_unigram_perplexity']
  table = report.one_shot_table(str(results))
  assert '| SparseGPT |' in table and '(1 seed)' in table
  capsys.readouterr()
  run.main(argv)  # everything has a result: nothing runs again
  assert 'seed 0' not in capsys.readouterr().out
  assert set(methods.SPARSITIES) == {'50%', '70%', '2:4', '4:8'}


def test_quick_training_part_keeps_the_pattern_after_every_rule(tmp_path):
  results = tmp_path / 'r'
  run.main(['--quick', '--part', 'train', '--results', str(results),
            '--workdir', str(tmp_path / 'w'), '--seeds', '0',
            '--sparsities', '2:4', '--steps', '10',
            '--methods', 'wanda_ft,gradual,gsm_from_wanda'])
  for name in ('wanda_ft', 'gradual', 'gsm_from_wanda'):
    r = json.loads((results / 'train' / f'{name}_2of4_s0.json').read_text())
    assert r['steps'] == 10 and r['test_perplexity'] > 1.0
    kept = sum(k for k, _ in r['kept'].values())
    assert kept == sum(n for _, n in r['kept'].values()) // 2, name
  assert '| GSM from Wanda |' in report.one_shot_table(str(results),
                                                       part='train')
