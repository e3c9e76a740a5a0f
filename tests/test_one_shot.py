"""One-shot pruning against NumPy statements of the references
(tests/reference.py), and its promises on a small transformer."""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference

from examples.lm import model as model_lib
import gsm_optax
from gsm_optax._src.oneshot import capture


def layer(seed, d_in=64, d_out=48, samples=16, tokens=12):
  """A Dense kernel (in, out), calibration inputs (samples, tokens, in) whose
  features differ in scale (as a trained model's do), and its forward."""
  rng = np.random.default_rng(seed)
  kernel = rng.normal(size=(d_in, d_out)).astype(np.float32)
  scale = np.exp(rng.normal(size=d_in)).astype(np.float32)
  x = (rng.normal(size=(samples, tokens, d_in)) * scale).astype(np.float32)
  return {'kernel': jnp.asarray(kernel)}, jnp.asarray(x), (
      lambda p, x: x @ p['kernel'])


@pytest.mark.parametrize('pattern', [None, '2:4', '4:8'])
@pytest.mark.parametrize('seed', [0, 1])
def test_wanda_equals_the_reference(seed, pattern):
  params, x, forward = layer(seed)
  _, masks = gsm_optax.one_shot_prune(forward, params, x, ratio=None if
                                      pattern else 2.0, method='wanda',
                                      pattern=pattern, batch_size=5)
  n, m = (0, 0) if pattern is None else map(int, pattern.split(':'))
  want = reference.wanda_reference(np.asarray(params['kernel']).T, x, 0.5,
                                   n, m)
  np.testing.assert_array_equal(np.asarray(masks['kernel']).T, want)


def test_wanda_breaks_ties_as_the_reference_stable_sort():
  # Equal scores in every row: the lower input index is pruned first.
  params = {'kernel': jnp.ones((8, 3))}
  x = jnp.ones((4, 5, 8))
  _, masks = gsm_optax.one_shot_prune(lambda p, x: x @ p['kernel'], params,
                                      x, 2.0, method='wanda')
  want = reference.wanda_reference(np.ones((3, 8)), np.ones((4, 5, 8)), 0.5)
  np.testing.assert_array_equal(np.asarray(masks['kernel']).T, want)
  assert np.asarray(masks['kernel'])[4:].all()


@pytest.mark.parametrize('pattern,blocksize', [(None, 128), (None, 32),
                                               ('2:4', 128), ('2:4', 16)])
@pytest.mark.parametrize('seed', [0, 1])
def test_sparsegpt_equals_a_float64_port_of_fasterprune(seed, pattern,
                                                        blocksize):
  params, x, forward = layer(seed, d_in=96, d_out=40, samples=32, tokens=16)
  pruned, masks = gsm_optax.one_shot_prune(
      forward, params, x, ratio=None if pattern else 2.0, method='sparsegpt',
      pattern=pattern, blocksize=blocksize, batch_size=8)
  n, m = (0, 0) if pattern is None else map(int, pattern.split(':'))
  h = reference.sparsegpt_hessian(x)
  want = reference.sparsegpt_reference(np.asarray(params['kernel']).T, h, 0.5,
                                       n, m, blocksize, 0.01)
  got = np.asarray(pruned['kernel'], np.float64).T
  np.testing.assert_array_equal(got == 0, want == 0)
  np.testing.assert_array_equal(np.asarray(masks['kernel']).T, want != 0)
  assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want)


def test_sparsegpt_dead_inputs_are_zeroed_as_the_reference():
  params, x, forward = layer(3, d_in=32, d_out=16)
  x = x.at[..., 5].set(0.0).at[..., 17].set(0.0)
  pruned, _ = gsm_optax.one_shot_prune(forward, params, x, 2.0,
                                       method='sparsegpt')
  want = reference.sparsegpt_reference(np.asarray(params['kernel']).T,
                                       reference.sparsegpt_hessian(x), 0.5)
  got = np.asarray(pruned['kernel'], np.float64).T
  assert (got[:, [5, 17]] == 0).all()
  assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want)


def mlp(seed):
  k = jax.random.split(jax.random.key(seed), 4)
  params = {'w1': jax.random.normal(k[0], (16, 32)), 'b1': jnp.zeros(32),
            'w2': jax.random.normal(k[1], (32, 8))}
  forward = lambda p, x: jax.nn.relu(x @ p['w1'] + p['b1']) @ p['w2']
  return params, forward, jax.random.normal(k[2], (64, 16))


def test_magnitude_equals_prune_globally_and_per_kernel():
  params, forward, x = mlp(0)
  got, got_masks = gsm_optax.one_shot_prune(forward, params, x, 4.0,
                                            method='magnitude',
                                            allocation='global')
  want, want_masks = gsm_optax.prune(params, 4.0)
  jax.tree.map(np.testing.assert_array_equal, got, want)
  jax.tree.map(np.testing.assert_array_equal, got_masks, want_masks)
  got, _ = gsm_optax.one_shot_prune(forward, params, x, 4.0,
                                    method='magnitude')
  for name in ('w1', 'w2'):
    alone, _ = gsm_optax.prune({name: params[name]}, 4.0)
    np.testing.assert_array_equal(got[name], alone[name])


def test_global_allocation_keeps_q_over_the_normalized_wanda_score():
  params, forward, x = mlp(1)
  _, masks = gsm_optax.one_shot_prune(forward, params, x, 4.0,
                                      method='wanda', allocation='global',
                                      sequential=False)
  n = 16 * 32 + 32 * 8
  assert int(masks['w1'].sum() + masks['w2'].sum()) == n // 4
  # The same mask from the score written out: |W| * ||X_j|| / its mean.
  h = jax.nn.relu(x @ params['w1'] + params['b1'])
  scores = []
  for w, inp in ((params['w1'], x), (params['w2'], h)):
    t = np.abs(np.asarray(w)) * np.sqrt((np.asarray(inp) ** 2).sum(0)
                                        / len(inp))[:, None]
    scores.append(t / t.mean())
  threshold = np.sort(np.concatenate([t.ravel() for t in scores]))[::-1][
      n // 4 - 1]
  np.testing.assert_array_equal(masks['w1'], scores[0] >= threshold)
  np.testing.assert_array_equal(masks['w2'], scores[1] >= threshold)


def tiny_gpt(seed=0):
  """examples/lm's GPT, small, with random weights (norm scales too, so that the inputs'
  features differ in scale as a trained model's do), its forward, and
  random calibration tokens."""
  model = model_lib.GPT(model_lib.GPTConfig(vocab=64, seq_len=16, width=32,
                                            heads=4, layers=2),
                        nnx.Rngs(seed))
  graphdef, state = nnx.split(model)
  params = nnx.to_pure_dict(state)
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.asarray(
          np.exp(rng.normal(size=x.shape)), x.dtype)
      if 'scale' in jax.tree_util.keystr(path) else x, params)
  def forward(p, tokens):
    state = nnx.state(model)
    nnx.replace_by_pure_dict(state, p)
    return nnx.merge(graphdef, state)(tokens)
  tokens = jnp.asarray(rng.integers(0, 64, size=(32, 16)))
  return params, forward, tokens


def reconstruction_errors(params, forward, tokens, pruned):
  """Per kernel, ||W X - W' X||^2 over its inputs in the dense model."""
  traced = capture.Traced(forward, params, tokens)
  leaves, pruned_leaves = jax.tree.leaves(params), jax.tree.leaves(pruned)
  sources = {s.source: 'hessian' for s in traced.sites}
  stats = traced.statistics(sources)(leaves, tokens)
  out = {}
  for site in traced.sites:
    w = capture.kernel_view(leaves[site.leaf], site.kernel_axes)
    d = w - capture.kernel_view(pruned_leaves[site.leaf], site.kernel_axes)
    out[site.leaf] = float(jnp.sum((d @ stats[site.source]) * d))
  return out


@pytest.mark.parametrize('pattern', [None, '2:4'])
def test_reconstruction_orders_sparsegpt_wanda_magnitude_on_a_transformer(
    pattern):
  params, forward, tokens = tiny_gpt()
  errors = {}
  for method in ('magnitude', 'wanda', 'sparsegpt'):
    pruned, _ = gsm_optax.one_shot_prune(
        forward, params, tokens, None if pattern else 2.0, method=method,
        pattern=pattern, sequential=False)
    errors[method] = reconstruction_errors(params, forward, tokens, pruned)
  assert len(errors['wanda']) == 9  # 4 kernels a block, and the head
  for leaf in errors['wanda']:
    e = {m: errors[m][leaf] for m in errors}
    assert e['sparsegpt'] < e['wanda'] < e['magnitude'], (leaf, e)


def test_sequential_prunes_each_group_on_the_pruned_models_inputs():
  params, forward, tokens = tiny_gpt(1)
  one_pass, _ = gsm_optax.one_shot_prune(forward, params, tokens, 2.0,
                                         sequential=False)
  sequential, masks = gsm_optax.one_shot_prune(forward, params, tokens, 2.0)
  flat = jax.tree_util.tree_flatten_with_path(sequential)[0]
  first = [jax.tree.leaves(one_pass)[i] for i, (p, _) in enumerate(flat)
           if 'qkv' in jax.tree_util.keystr(p) and 'kernel' in
           jax.tree_util.keystr(p)]
  # The first group reads the dense embedding either way: the same mask;
  # a later group reads inputs changed by the pruned layers before it.
  got = [x for p, x in flat if "'blocks'][0]['qkv']['kernel']" in
         jax.tree_util.keystr(p)]
  np.testing.assert_array_equal(got[0], first[0])
  later = [(a, b) for (p, a), b in zip(flat, jax.tree.leaves(one_pass))
           if "['head']['kernel']" in jax.tree_util.keystr(p)]
  assert not np.array_equal(*later[0])
  assert int(sum(m.sum() for m in jax.tree.leaves(masks))) > 0


@pytest.mark.parametrize('method', ['magnitude', 'wanda', 'sparsegpt'])
def test_embedding_stays_dense_and_every_kernel_is_pruned(method):
  params, forward, tokens = tiny_gpt(2)
  pruned, masks = gsm_optax.one_shot_prune(forward, params, tokens, 2.0,
                                           method=method)
  np.testing.assert_array_equal(pruned['embed']['embedding'],
                                params['embed']['embedding'])
  report = gsm_optax.sparsity_report(pruned)
  kernels = [l for l in report.leaves if l.path.endswith("['kernel']")]
  assert len(kernels) == 9
  for l in kernels:
    assert 0.45 <= 1 - l.density <= 0.55, (l.path, l.density)
