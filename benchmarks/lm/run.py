"""The language-model pruning benchmark: the one loop that runs it.

``python -m benchmarks.lm.run`` trains the dense model of `examples.lm`
on the King James Version if its workdir has none (resuming), then prunes
it one-shot with every method at every sparsity, for every calibration
seed (128 training sequences at random offsets, as the papers), and writes
one JSON a run (test and validation perplexity, the kept weights per
kernel, the time) to ``--results``; runs with a result are skipped.
``--quick``: synthetic text and a tiny model, for the test.
"""

import argparse
import dataclasses
import json
import os
import time

import flax.nnx as nnx
import jax.numpy as jnp
import numpy as np

from benchmarks.lm import methods as methods_lib
from examples.lm import data
from examples.lm import model as model_lib
from examples.lm import train
import gsm_optax

CALIBRATION_SEQUENCES = 128


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


def calibration(tokens: np.ndarray, seq_len: int, seed: int) -> np.ndarray:
  """The papers' calibration set: 128 training sequences at random offsets
  (``seed`` draws them), inputs only."""
  rng = np.random.default_rng((seed, 128))
  return data.sample(tokens, seq_len, CALIBRATION_SEQUENCES, rng)[:, :-1]


def one_shot(model, config, splits, method, sparsity, seed) -> dict:
  """One one-shot run's result (the model is left as it was)."""
  graphdef, state = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(state)
  forward = lambda p, tokens: nnx.merge(graphdef, p)(tokens)

  start = time.perf_counter()
  pruned, _ = gsm_optax.one_shot_prune(
      forward, params, jnp.asarray(calibration(splits['train'],
                                               config.seq_len, seed)),
      sparsity.ratio, method=method.method, pattern=sparsity.pattern,
      allocation=method.allocation, prunable=model_lib.kernels(params))
  seconds = time.perf_counter() - start
  pruned_model = nnx.merge(graphdef, pruned)
  result = {'method': method.name, 'sparsity': sparsity.name, 'seed': seed,
            'seconds': seconds}
  for name in ('validation', 'test'):
    result[f'{name}_perplexity'] = train.perplexity(
        pruned_model, splits[name], config.seq_len, config.eval_batch)
  report = gsm_optax.sparsity_report(pruned, prunable=model_lib.kernels(
      params), pattern=sparsity.pattern)
  result['kept'] = {l.path: [l.nonzero, l.size] for l in report.leaves
                    if l.prunable}
  result['kept_fraction'] = report.prunable_nonzero / report.prunable_size
  return result


def write(path: str, result: dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.tmp', 'w') as f:
    json.dump(result, f, indent=1)
  os.replace(path + '.tmp', path)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--results', default='benchmarks/results/lm')
  parser.add_argument('--workdir', default='runs/lm_dense')
  parser.add_argument('--methods', default=','.join(methods_lib.METHODS))
  parser.add_argument('--sparsities',
                      default=','.join(methods_lib.SPARSITIES))
  parser.add_argument('--seeds', default='0,1,2')
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
  for seed in [int(s) for s in args.seeds.split(',')]:
    for sparsity_name in args.sparsities.split(','):
      sparsity = methods_lib.SPARSITIES[sparsity_name]
      for method_name in args.methods.split(','):
        method = methods_lib.METHODS[method_name]
        if not methods_lib.applies(method, sparsity):
          continue
        tag = sparsity.name.replace('%', 'pct').replace(':', 'of')
        path = os.path.join(args.results, 'oneshot',
                            f'{method.name}_{tag}_s{seed}.json')
        if os.path.exists(path):
          continue
        result = one_shot(model, config, splits, method, sparsity, seed)
        write(path, result)
        print(f"{method.label} at {sparsity.name}, seed {seed}: test "
              f"perplexity {result['test_perplexity']:.3f} "
              f"({result['seconds']:.0f} s)")


if __name__ == '__main__':
  main()
