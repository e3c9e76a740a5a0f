"""The final-prune study's harness: variants build, run and tabulate."""

import json
import os

import numpy as np

from benchmarks.accuracy import paper_protocol


def tiny(config):
  config.dataset = 'synthetic'
  config.synthetic_size = 8
  config.batch_size = config.eval_batch_size = 4
  config.dense.epochs = config.gsm.epochs = 2
  config.dense.warmup_epochs = config.gsm.warmup_epochs = 0
  config.gsm.freeze_ranking_epoch = min(config.gsm.freeze_ranking_epoch, 1)
  config.ratio = 5.0
  return config


def test_variants_run_from_the_papers_dense_model(tmp_path, monkeypatch):
  monkeypatch.setattr(paper_protocol, 'RUNS_DIR', str(tmp_path / 'runs'))
  real = paper_protocol.config_for
  monkeypatch.setattr(paper_protocol, 'config_for',
                      lambda *a, **k: tiny(real(*a, **k)))
  results = tmp_path / 'results'
  variants = ['paper', 'frozen', 'recipe']
  paper_protocol.run('lenet300', [0], variants, str(results))
  runs = {r['variant']: r for r in paper_protocol.load(str(results))}
  assert sorted(runs) == sorted(variants)
  assert len({r['dense_accuracy'] for r in runs.values()}) == 1  # shared
  for r in runs.values():
    assert r['kept_weights'] >= r['prunable_weights'] // 5
    assert len(r['curves']['entered_per_step']) == 2
    assert len(r['curves']['pruned_norm_share']) == 2
    assert r['last_mask_accuracy'] is not None
  # Evaluating by the last mask leaves the model as it was: the prune of
  # the magnitudes starts from the unmasked weights.
  for r in runs.values():
    assert r['pruned_norm_share'] > 0.0
  # Frozen from GSM's epoch 1: nothing enters the active set in epoch 2.
  assert runs['frozen']['curves']['entered_per_step'][1] == 0
  assert runs['paper']['curves']['entered_per_step'][1] > 0
  # The paper's workdir gone (a new machine), a variant still to run
  # trains the seed's dense model again, the same on one thread, and the
  # next starts from it.
  import shutil  # pylint: disable=import-outside-toplevel
  shutil.rmtree(paper_protocol.workdir_for('lenet300', 5.0, 'paper', 0))
  for variant in ('frozen', 'recipe'):
    shutil.rmtree(paper_protocol.workdir_for('lenet300', 5.0, variant, 0))
    (results / f'lenet300_r5_{variant}_s0.json').unlink()
  paper_protocol.run('lenet300', [0], variants, str(results))
  again = {r['variant']: r for r in paper_protocol.load(str(results))}
  assert again['frozen']['dense_accuracy'] == runs['paper']['dense_accuracy']
  assert again['recipe']['dense_accuracy'] == runs['paper']['dense_accuracy']
  assert os.path.exists(os.path.join(paper_protocol.workdir_for(
      'lenet300', 5.0, 'frozen', 0), 'phase_results.json'))
  # A second call finds every result and trains nothing.
  from examples.paper import train  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(train, 'train_and_evaluate', None)
  paper_protocol.run('lenet300', [0], variants, str(results))


def test_table_gives_means_and_the_prune_cost(tmp_path):
  def result(variant, seed, before, after, share, warning):
    leaves = [{'path': "['fc1']['kernel']", 'prunable': True, 'density': 0.1},
              {'path': "['fc1']['bias']", 'prunable': False, 'density': 1.0}]
    return dict(model='lenet300', ratio=60.0, variant=variant, seed=seed,
                dense_accuracy=0.9, accuracy_before_prune=before,
                pruned_accuracy=after, pruned_norm_share=share,
                prune_warning=warning, kept_weights=100,
                curves={'entered_per_step': [50.0, 10.0]},
                last_mask_accuracy=after,
                sparsity={'leaves': leaves})
  # Runs that judged the prune by its outputs: their check's message
  # decides, whatever the share (a share over the line, no warning; one
  # under it, a warning).
  by_outputs = [dict(result('decay_0.9', 0, 0.87, 0.87, 0.05, None),
                     predictions_changed=0.004),
                dict(result('decay_0.9', 1, 0.87, 0.86, 0.001, 'costly'),
                     predictions_changed=0.02)]
  for i, r in enumerate([result('paper', 0, 0.88, 0.84, 0.2, 'costly'),
                         result('paper', 1, 0.90, 0.84, 0.3, 'costly'),
                         result('recipe', 0, 0.87, 0.87, 0.001, None),
                         # recorded under an older, lower tolerance: the
                         # table asks the library's default now
                         result('recipe', 1, 0.87, 0.87, 0.015, 'old')]
                        + by_outputs):
    (tmp_path / f'{i}.json').write_text(json.dumps(r))
  lines = paper_protocol.report_lines(str(tmp_path))
  paper = next(l for l in lines if l.startswith("| the paper's rule"))
  cells = [c.strip() for c in paper.split('|')[1:-1]]
  assert cells[1] == '2' and cells[2] == '89.00 ± 1.41'
  assert cells[4] == f'{np.mean([4.0, 6.0]):.2f} ± {np.std([4.0, 6.0], ddof=1):.2f}'
  assert cells[6] == '10.00 ± 0.00' and cells[7] == 'n/a'
  assert cells[8] == '2 of 2'
  recipe = next(l for l in lines if l.startswith('| score_decay 0.99 + passive'))
  assert '| 0 of 2 |' in recipe and recipe.rstrip('|').strip().endswith('10.0')
  judged = next(l for l in lines if l.startswith('| score_decay 0.9 |'))
  cells = [c.strip() for c in judged.split('|')[1:-1]]
  assert cells[7] == f'1.20 ± {np.std([0.4, 2.0], ddof=1):.2f}'
  assert cells[8] == '1 of 2'
