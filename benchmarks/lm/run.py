"""The language-model pruning benchmark: the one loop that runs it.

``python -m benchmarks.lm.run`` trains the dense model of `examples.lm`
on the King James Version if its workdir has none (resuming), then prunes
it one-shot with every method at every sparsity, for every calibration
seed (128 training sequences at random offsets, as the papers), and writes
one JSON a run (test and validation perplexity, the kept weights per
kernel, the time) to ``--results``; runs with a result are skipped.
``--part train`` runs the methods that train (`methods.TRAINING`: each
one-shot mask fine-tuned, gradual magnitude pruning, GSM from the dense
model and from Wanda's mask), each for ``--steps`` AdamW steps, at the
learning rate ``--part sweep`` chose for it on the validation split (seed
0, every lr of ``--learning-rates``, at `methods.SWEEP_AT`'s sparsities).
``--quick``: synthetic text and a tiny model, for the test.
"""

import argparse
import dataclasses
import glob
import json
import os

from benchmarks.lm import methods as methods_lib
from benchmarks.lm import runs
from examples.lm import data
from examples.lm import train


def dense_config(quick: bool, workdir: str) -> train.Config:
  if quick:
    return train.Config(width=32, layers=2, heads=2, seq_len=32,
                        batch_size=16, steps=60, warmup_steps=5,
                        learning_rate=1e-2, checkpoint_every=60,
                        workdir=workdir)
  return train.Config(workdir=workdir)


def splits_for(quick: bool) -> dict:
  if quick:
    text = data.synthetic(60_000, 0)
    return {'train': text[:50_000], 'validation': text[50_000:55_000],
            'test': text[55_000:]}
  return data.load_kjv()


def tag(sparsity_name: str) -> str:
  return sparsity_name.replace('%', 'pct').replace(':', 'of').replace(' ', '')


def swept(results: str, method, at: str) -> list[dict]:
  """The sweep's runs of ``method`` at sparsity ``at``."""
  runs = [json.load(open(p)) for p in sorted(glob.glob(
      os.path.join(results, 'sweep', f'{method.name}_{tag(at)}_lr*.json')))]
  return [r for r in runs if r['method'] == method.name]


def chosen(results: str, method, sparsity) -> dict:
  """The sweep run with the lowest validation perplexity of ``method`` at
  the sparsity whose sweep ``sparsity`` takes (`methods.SWEEP_AT`)."""
  at = methods_lib.SWEEP_AT[sparsity.name]
  runs = swept(results, method, at)
  if not runs:
    raise SystemExit(
        f'{results}/sweep has no learning-rate sweep of {method.name} at '
        f'{at}: run `python -m benchmarks.lm.run --part sweep --methods '
        f"{method.name} --sparsities '{at}'` first.")
  return min(runs, key=lambda r: r['validation_perplexity'])


def write(path: str, result: dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.tmp', 'w') as f:
    json.dump(result, f, indent=1)
  os.replace(path + '.tmp', path)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--results', default='benchmarks/results/lm')
  parser.add_argument('--workdir', default='runs/lm_dense')
  parser.add_argument('--part', default='oneshot',
                      choices=('oneshot', 'sweep', 'train'))
  parser.add_argument('--methods', default=None,
                      help="default: every method of the part's table")
  parser.add_argument('--steps', type=int, default=None,
                      help='training steps of the sweep and train parts (200; quick 20)')
  parser.add_argument('--sparsities', default=None, help=(
      'default: every sparsity (sweep: those of methods.SWEEP_AT)'))
  parser.add_argument('--seeds', default=None,
                      help='default 0,1,2 (sweep: 0)')
  parser.add_argument('--learning-rates', default=','.join(
      map(str, methods_lib.LEARNING_RATES)), help='the sweep\'s lrs')
  parser.add_argument('--quick', action='store_true')
  args = parser.parse_args(argv)
  config = dense_config(args.quick, args.workdir)
  splits = splits_for(args.quick)
  dense = train.train(config, splits)
  model = dense['model']
  write(os.path.join(args.results, 'dense.json'), {
      k: v for k, v in dense.items() if k != 'model'} | {
          'config': dataclasses.asdict(config)})
  print(f"dense: test perplexity {dense['test_perplexity']:.3f} (unigram "
        f"{dense['test_unigram_perplexity']:.2f}, bigram "
        f"{dense['test_bigram_perplexity']:.2f})")
  table = (methods_lib.METHODS if args.part == 'oneshot'
           else methods_lib.TRAINING)
  steps = args.steps or (20 if args.quick else 200)
  sweep = args.part == 'sweep'
  seeds = args.seeds or ('0' if sweep else '0,1,2')
  sparsities = args.sparsities or ','.join(
      dict.fromkeys(methods_lib.SWEEP_AT.values()) if sweep
      else methods_lib.SPARSITIES)
  rates = [float(r) for r in args.learning_rates.split(',')]
  for seed in [int(s) for s in seeds.split(',')]:
    for sparsity_name in sparsities.split(','):
      sparsity = methods_lib.SPARSITIES[sparsity_name]
      for method_name in (args.methods or ','.join(table)).split(','):
        method = table[method_name]
        if not methods_lib.applies(method, sparsity):
          continue
        if not sweep:
          run_one(args, model, config, splits, method, sparsity, seed, steps)
          continue
        grid = list(rates)
        while grid:
          for lr in grid:
            run_one(args, model, config, splits, method, sparsity, seed,
                    steps, lr)
          grid = further(args.results, method, sparsity, rates)


def further(results, method, sparsity, rates) -> list:
  """The next lr of `methods.LADDER` past the swept end where the best
  validation perplexity is (none when the best is inside the sweep)."""
  runs = swept(results, method, methods_lib.SWEEP_AT[sparsity.name])
  tried = sorted(r['learning_rate'] for r in runs)
  best = chosen(results, method, sparsity)['learning_rate']
  ladder = methods_lib.LADDER
  if len(tried) < 2 or best not in (tried[0], tried[-1]) or not set(
      rates) <= set(tried) or best not in ladder:
    return []
  step = -1 if best == tried[0] else 1
  k = ladder.index(best) + step
  return [ladder[k]] if 0 <= k < len(ladder) else []


def run_one(args, model, config, splits, method, sparsity, seed, steps,
            lr=None) -> None:
  """One run of the part (``lr``: a sweep's), unless it has a result."""
  name = f'{method.name}_{tag(sparsity.name)}' + (
      f'_lr{lr:g}' if lr else '') + f'_s{seed}.json'
  path = os.path.join(args.results, args.part, name)
  if os.path.exists(path):
    return
  if args.part == 'oneshot':
    result = runs.one_shot(model, config, splits, method, sparsity, seed)
  else:
    best = None if lr else chosen(args.results, method, sparsity)
    if best and (best['sparsity'], best['seed'], best['steps']) == (
        sparsity.name, seed, steps):
      result = best  # the sweep's run at the chosen lr is this run
    else:
      result = runs.trained(model, config, splits, method, sparsity, seed,
                            steps, lr or best['learning_rate'])
  write(path, result)
  print(f"{method.label} at {sparsity.name}, seed {seed}"
        + (f', lr {lr:g}' if lr else '') + ': test perplexity '
        f"{result['test_perplexity']:.3f} ({result['seconds']:.0f} s)")


if __name__ == '__main__':
  main()
