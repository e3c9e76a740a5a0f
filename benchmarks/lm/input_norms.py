"""How alike the norms of each kernel's inputs are, in the dense model.

``python -m benchmarks.lm.input_norms --workdir runs/lm_dense`` prints, for
every value that a kernel of the blocks multiplies (over the first 32
calibration sequences of seed 0), the largest input feature's norm over the
median one and the coefficient of variation of the norms: where they are
alike, Wanda's score is the weight magnitude (benchmarks/lm/RESULTS.md).
"""

import argparse

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.lm import runs
from examples.lm import data
from examples.lm import model as model_lib
from examples.lm import train
from examples.paper import checkpoints
from gsm_optax._src.oneshot import capture


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--workdir', default='runs/lm_dense')
  args = parser.parse_args(argv)
  config = train.Config(workdir=args.workdir)
  model = model_lib.GPT(config.gpt(), nnx.Rngs(0))
  optimizer = train.optimizer_for(config, model)
  ckpt = checkpoints.Checkpoints(config.workdir)
  ckpt.restore(ckpt.latest_step(), model, optimizer)
  graphdef, state = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(state)
  tokens = jnp.asarray(runs.calibration(data.load_kjv()['train'],
                                       config.seq_len, 0))[:32]
  traced = capture.Traced(lambda p, t: nnx.merge(graphdef, p)(t), params,
                          tokens)
  stats = traced.statistics({s.source: 'sq_norms' for s in traced.sites})(
      jax.tree.leaves(params), tokens)
  paths = [jax.tree_util.keystr(p) for p, _ in
           jax.tree_util.tree_flatten_with_path(params)[0]]
  seen = set()
  for site in traced.sites:
    if site.source in seen:
      continue
    seen.add(site.source)
    norms = np.sqrt(np.asarray(stats[site.source]))
    print(f'{paths[site.leaf]:<32} largest / median '
          f'{norms.max() / np.median(norms):4.1f}, coefficient of variation '
          f'{norms.std() / norms.mean():.2f}')


if __name__ == '__main__':
  main()
