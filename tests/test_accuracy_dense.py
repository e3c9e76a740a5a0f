"""Where a benchmark run takes its dense model from
(`benchmarks.accuracy.dense_models`), and that side-by-side runs do not
train the same missing one twice."""

import pytest

from benchmarks.accuracy import dense_models
from benchmarks.accuracy import run
from benchmarks.accuracy import runs as runs_lib


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


def test_with_a_pool_one_run_per_missing_dense_model_goes_first(tmp_path):
  """Runs side by side would each train the same missing dense model again;
  one per seed does, first, and the others start from it."""
  submitted = []

  class Pool:  # records the batches; `future.result()` ends a batch

    def submit(self, fn, r, *args):
      submitted.append(r.title)
      return type('Done', (), {'result': lambda self: submitted.append('|')})()

  def a_run(seed, method):
    dense = str(tmp_path / f's{seed}' / 'gsm_r10')
    return runs_lib.Run(f'{method} s{seed}', 'lenet5', method, 2.0, seed,
                        0.01, str(tmp_path / f'{method}_s{seed}.json'),
                        str(tmp_path / f's{seed}' / method), (dense, '', ''))

  todo = [a_run(s, m) for s in (0, 1) for m in ('a', 'b', 'c')]
  run.run_each(todo, {}, retrain_dense=True, pool=Pool())
  assert submitted == ['a s0', 'a s1', '|', '|'] + [
      'b s0', 'c s0', 'b s1', 'c s1'] + ['|'] * 4
  submitted.clear()  # without retraining, the runs keep their order
  run.run_each(todo, {}, pool=Pool())
  assert submitted == [r.title for r in todo] + ['|'] * 6
