"""The language-model benchmark's quick mode: the loop runs every kind of
run (one shot, the lr sweep, training at the chosen lr, structured with the
slim model timed), writes a JSON each, skips what it has, and the tables
read them."""

import json

import numpy as np
import pytest

from benchmarks.lm import methods
from benchmarks.lm import report
from benchmarks.lm import run


def read(results, part, name):
  return json.loads((results / part / name).read_text())


def kept_and_half(result):
  kept = sum(k for k, _ in result['kept'].values())
  return kept, sum(n for _, n in result['kept'].values()) // 2


def test_quick_benchmark_runs_every_part_and_the_tables_read_it(tmp_path,
                                                                 capsys):
  results = tmp_path / 'r'
  common = ['--quick', '--results', str(results), '--workdir',
            str(tmp_path / 'w'), '--steps', '4']
  oneshot = common + ['--seeds', '0', '--sparsities', '50%,2:4,2x FLOPs',
                      '--methods', 'sparsegpt,wanda_global']
  run.main(oneshot)
  files = sorted(p.name for p in (results / 'oneshot').glob('*.json'))
  assert files == sorted([
      'sparsegpt_50pct_s0.json', 'wanda_global_50pct_s0.json',
      'sparsegpt_2of4_s0.json'])  # no global allocation with N:M, and
  # whole groups are pruned by magnitude only
  dense = json.loads((results / 'dense.json').read_text())
  assert dense['test_perplexity'] < dense['test_unigram_perplexity']
  for name in files:
    r = read(results, 'oneshot', name)
    assert r['test_perplexity'] > 1.0 and r['seconds'] > 0
    # Every block kernel pruned (4 a block, 2 blocks), to the target.
    assert len(r['kept']) == 8
    kept, half = kept_and_half(r)
    if '2of4' in name:
      assert kept == half
    else:  # SparseGPT prunes one more a block, as the reference
      assert abs(kept - half) <= half // 100, (name, kept, half)

  # The sweep (one lr here; its choice: the test below), then training at
  # the chosen lr: seed 0 is the sweep's run, seed 1 trains.
  run.main(common + ['--part', 'sweep', '--sparsities', '50%', '--methods',
                     'magnitude_ft', '--learning-rates', '1e-3'])
  best = read(results, 'sweep', 'magnitude_ft_50pct_lr0.001_s0.json')
  run.main(common + ['--part', 'train', '--sparsities', '50%', '--seeds',
                     '0,1', '--methods', 'magnitude_ft'])
  assert read(results, 'train', 'magnitude_ft_50pct_s0.json') == best
  again = read(results, 'train', 'magnitude_ft_50pct_s1.json')
  assert again['learning_rate'] == best['learning_rate']
  assert again['steps'] == 4 and again['test_perplexity'] > 1.0
  kept, half = kept_and_half(again)
  assert abs(kept - half) <= 1  # the fixed mask held

  # Structured GSM: its slim model keeps the FLOPs budget and is timed
  # against the dense one; 1.5x takes the lr chosen at 2x.
  run.main(common + ['--part', 'sweep', '--sparsities', '2x FLOPs',
                     '--methods', 'gsm', '--learning-rates', '1e-2'])
  r = read(results, 'sweep', 'gsm_2xFLOPs_lr0.01_s0.json')
  assert r['slim']['flops'][1] <= r['slim']['flops'][0] / 2
  assert set(r['slim']['speedup']) == {'1', '32'}
  assert np.isfinite(r['test_perplexity'])
  assert run.chosen(str(results), methods.TRAINING['gsm'],
                    methods.SPARSITIES['1.5x FLOPs']) == r

  text = report.generated(str(results))
  for line in ('| SparseGPT |', '| magnitude + fine-tune | 50% | ',
               '| GSM | 2x FLOPs |', '(2 seeds) |'):
    assert line in text, line
  readme = report.readme_table(str(results)).splitlines()
  assert readme[0] == (f"| dense {dense['test_perplexity']:.2f} | 50% | 70% "
                       '| 2:4 | 4:8 | 1.5x FLOPs | 2x FLOPs |')
  magnitude_ft = next(l for l in readme if l.startswith('| magnitude + fin'))
  mean = np.mean([read(results, 'train', f'magnitude_ft_50pct_s{s}.json')[
      'test_perplexity'] for s in (0, 1)])
  assert magnitude_ft.split(' | ')[1].strip('*') == f'{mean:.2f}'
  assert magnitude_ft.count('|') == 8 and magnitude_ft.endswith('– |')
  assert readme[-1].startswith('Largest std over seeds: ')
  capsys.readouterr()
  run.main(oneshot)  # everything has a result: nothing runs again
  assert 'seed 0' not in capsys.readouterr().out
  assert set(methods.SPARSITIES) == {'50%', '70%', '2:4', '4:8',
                                     '1.5x FLOPs', '2x FLOPs'}


def test_the_sweep_chooses_on_validation_and_goes_on_past_an_end(tmp_path):
  gsm, at_70 = methods.TRAINING['gsm'], methods.SPARSITIES['70%']

  def swept(curve):  # lr -> validation perplexity, as sweep results
    for lr, perplexity in curve.items():
      run.write(str(tmp_path / 'sweep' / f'gsm_50pct_lr{lr:g}_s0.json'),
                {'method': 'gsm', 'sparsity': '50%', 'learning_rate': lr,
                 'validation_perplexity': perplexity})
    return run.further(str(tmp_path), gsm, at_70, (3e-4, 1e-3, 3e-3))

  with pytest.raises(SystemExit, match='--part sweep --methods gsm'):
    run.chosen(str(tmp_path), gsm, at_70)
  assert swept({3e-4: 3.2, 1e-3: 3.1, 3e-3: 3.0}) == [1e-2]  # best at the top
  assert run.chosen(str(tmp_path), gsm, at_70)['learning_rate'] == 3e-3
  assert swept({1e-2: 3.05}) == []  # inside now
  assert swept({1e-2: 2.9}) == [3e-2]  # still at the top: on
  assert swept({3e-2: 2.8, 1e-1: 2.7}) == []  # the ladder ends
  assert run.chosen(str(tmp_path), gsm, at_70)['learning_rate'] == 1e-1
  for f in (tmp_path / 'sweep').glob('*'):
    f.unlink()
  assert swept({3e-4: 2.9, 1e-3: 3.1, 3e-3: 3.0}) == [1e-4]  # down
  # A method that runs at some sparsities only is skipped at the others.
  at = methods.SPARSITIES
  assert methods.applies(methods.TRAINING['gsm_from_wanda'], at['50%'])
  assert not methods.applies(methods.TRAINING['gsm_from_wanda'], at['2:4'])
  assert methods.applies(methods.TRAINING['gsm'], at['2:4'])


@pytest.mark.parametrize('pattern', [None, '2:4'])
def test_gsm_from_a_one_shot_prune_is_that_prune_fine_tuned(pattern):
  # Why the benchmark's "GSM from Wanda" row equals "Wanda + fine-tune":
  # started from a pruned model (exactly Q non-zeros), every pruned weight
  # scores |g * 0| = 0, so the active set is the prune's mask at every
  # step, and passive decay moves zeros nowhere. (Provided every kept weight
  # has a non-zero gradient: with fewer than Q non-zero scores the paper's
  # threshold is 0 and every gradient passes, zeros too.)
  import jax
  import jax.numpy as jnp
  import optax

  import gsm_optax
  rng = np.random.default_rng(0)
  params = {'w1': rng.normal(size=(64, 32)).astype(np.float32),
            'w2': rng.normal(size=(32, 8)).astype(np.float32)}
  x = jnp.asarray(rng.normal(size=(64, 64)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(64, 8)), jnp.float32)
  loss = lambda p: jnp.mean((jnp.tanh(x @ p['w1']) @ p['w2'] - y) ** 2)
  start, masks = gsm_optax.prune(params, 2.0 if pattern is None else None,
                                 pattern=pattern)
  for g, m in zip(jax.tree.leaves(jax.grad(loss)(start)),
                  jax.tree.leaves(masks)):
    assert np.all(np.asarray(g)[np.asarray(m)] != 0)
  adamw = optax.adamw(1e-2, weight_decay=0.1)
  ends = []
  for tx in (gsm_optax.global_sparse(adamw, 2.0 if pattern is None else None,
                                     passive_decay=0.05, score_decay=0.9,
                                     pattern=pattern),
             optax.chain(gsm_optax.fixed_mask(masks), adamw)):
    p, state = start, tx.init(start)
    for _ in range(10):
      updates, state = tx.update(jax.grad(loss)(p), state, p)
      p = optax.apply_updates(p, updates)
    ends.append(p)
  for a, b, m in zip(jax.tree.leaves(ends[0]), jax.tree.leaves(ends[1]),
                     jax.tree.leaves(masks)):
    np.testing.assert_array_equal(np.asarray(a) != 0, np.asarray(m))
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert float(loss(ends[0])) < float(loss(start))
