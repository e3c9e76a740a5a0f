"""Structured GSM: the budget's selection, the step, the prune.

Checked against independent NumPy statements: the costs counted by hand,
the selection rule walked in Python, brute force over every subset on small
cases, and the whole optimizer step.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gsm_optax

IN, H1, H2, OUT, BATCH = 5, 6, 4, 2, 3


def mlp(p, x):
  h = jax.nn.relu(x @ p['w1'] + p['b1'])
  h = jnp.tanh(h @ p['w2'] + p['b2'])
  return h @ p['w3'] + p['b3']


def random_params(rng):
  shapes = {'w1': (IN, H1), 'b1': (H1,), 'w2': (H1, H2), 'b2': (H2,),
            'w3': (H2, OUT), 'b3': (OUT,)}
  return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def groups_for(params):
  return gsm_optax.find_groups(mlp, params, jnp.ones((BATCH, IN)))


def cost(n1, n2, budget):
  """The kept model's parameters or FLOPs with n1 and n2 hidden units,
  counted by hand."""
  if budget == 'params':
    return IN * n1 + n1 + n1 * n2 + n2 + n2 * OUT + OUT
  return 2 * BATCH * (IN * n1 + n1 * n2 + n2 * OUT)


def reference_select(scores, ratio, budget, min_keep=1):
  """The documented rule, walked in Python."""
  sizes = (H1, H2)
  family = np.repeat([0, 1], sizes)
  marginal = {0: cost(H1, H2, budget) - cost(H1 - 1, H2, budget),
              1: cost(H1, H2, budget) - cost(H1, H2 - 1, budget)}
  density = np.array([s / marginal[f] for s, f in zip(scores, family)])
  key = density.copy()
  for f, start in ((0, 0), (1, H1)):
    s = scores[start:start + sizes[f]]
    key[start + np.argsort(-s, kind='stable')[:min_keep]] = np.inf
  order = np.argsort(-key, kind='stable')
  target = cost(H1, H2, budget) / ratio
  counts, last = [0, 0], None
  for k, g in enumerate(order):
    counts[family[g]] += 1
    if cost(*counts, budget) > target * (1 + 1e-6) and k >= 2 * min_keep:
      break
    last = g
  active = key >= key[last]
  counts = [active[:H1].sum(), active[H1:].sum()]
  for g in order:  # then every later group that still fits
    more = [c + (f == family[g]) for f, c in enumerate(counts)]
    if not active[g] and cost(*more, budget) <= target * (1 + 1e-6):
      active[g], counts = True, more
  return active


@pytest.mark.parametrize('budget', ['params', 'flops'])
@pytest.mark.parametrize('ratio', [1.0, 1.5, 2.0, 3.0, 5.0])
def test_selection_is_the_documented_rule(budget, ratio):
  groups = groups_for(random_params(np.random.default_rng(0)))
  assert [f.size for f in groups.families] == [H1, H2]
  assert groups.totals[budget] == cost(H1, H2, budget)
  for seed in range(5):
    scores = np.random.default_rng(seed).exponential(size=H1 + H2)
    if seed % 2:
      scores[3] = scores[4]  # a tie
    chosen = groups.select(jnp.asarray(scores), ratio, budget)
    expected = reference_select(scores, ratio, budget)
    np.testing.assert_array_equal(chosen.active, expected)
    assert int(chosen.num_active) == expected.sum()
    n1, n2 = expected[:H1].sum(), expected[H1:].sum()
    if not seed % 2:  # no tie: within the budget
      assert cost(n1, n2, budget) <= cost(H1, H2, budget) / ratio * (1 + 1e-6)
    np.testing.assert_allclose(groups.kept_cost(chosen.active, budget),
                               cost(n1, n2, budget), rtol=1e-6)


def test_selection_against_brute_force_on_small_cases():
  groups = groups_for(random_params(np.random.default_rng(1)))
  rng = np.random.default_rng(2)
  for budget, ratio in itertools.product(['params', 'flops'], [2.0, 4.0]):
    target = cost(H1, H2, budget) / ratio
    for _ in range(4):
      scores = rng.exponential(size=H1 + H2)
      active = np.asarray(groups.select(jnp.asarray(scores), ratio,
                                        budget).active)
      # The kept set stays within the budget; against every subset within
      # it that keeps a unit in each layer (brute force), it loses at most
      # the score of one group: the first it left out.
      n1, n2 = active[:H1].sum(), active[H1:].sum()
      assert cost(n1, n2, budget) <= target * (1 + 1e-6)
      best = 0.0
      for bits in itertools.product([0, 1], repeat=H1 + H2):
        bits = np.array(bits, bool)
        n1, n2 = bits[:H1].sum(), bits[H1:].sum()
        if n1 and n2 and cost(n1, n2, budget) <= target:
          best = max(best, scores[bits].sum())
      assert scores[active].sum() >= best - scores[~active].max() - 1e-9
  # With one family of equal costs it is the top k, the brute-force best.
  one = gsm_optax.find_groups(lambda p, x: jax.nn.relu(x @ p['w1']) @ p['w2'],
                              {'w1': np.ones((3, 8)), 'w2': np.ones((8, 2))},
                              jnp.ones((1, 3)))
  scores = rng.exponential(size=8)
  active = np.asarray(one.select(jnp.asarray(scores), 4.0, 'params').active)
  np.testing.assert_array_equal(active, scores >= np.sort(scores)[-2])


def test_selection_keeps_each_layer_and_takes_a_traced_ratio():
  groups = groups_for(random_params(np.random.default_rng(3)))
  scores = jnp.concatenate([jnp.full(H1, 10.0), jnp.full(H2, 1e-6)])
  chosen = groups.select(scores, 5.0, 'params')
  assert int(chosen.active[H1:].sum()) == 1  # min_keep: never emptied
  traced = jax.jit(lambda s, r: groups.select(s, r, 'flops').active)
  for ratio in (1.0, 2.5, 6.0):
    np.testing.assert_array_equal(
        traced(scores, jnp.float32(ratio)),
        groups.select(scores, ratio, 'flops').active)
  nan = scores.at[H1 + 2].set(jnp.nan)  # a NaN score ranks first
  assert bool(groups.select(nan, 5.0, 'params').active[H1 + 2])


def test_unreachable_budget_names_the_largest_ratio():
  groups = groups_for(random_params(np.random.default_rng(4)))
  smallest = cost(1, 1, 'params')
  with pytest.raises(ValueError, match=f'at most {cost(H1, H2, "params") / smallest:.3g}'):
    groups.select(jnp.ones(H1 + H2), 100.0, 'params')
  with pytest.raises(ValueError, match='`budget` must be one of'):
    gsm_optax.gsm(0.1, 2.0, groups=groups, budget='bytes')
  with pytest.raises(ValueError, match="`budget='flops'` needs `groups`"):
    gsm_optax.gsm(0.1, 2.0, budget='flops')
  with pytest.raises(ValueError, match='`prunable` chooses leaves'):
    gsm_optax.prune(random_params(np.random.default_rng(4)), 2.0,
                    prunable=gsm_optax.default_prunable, groups=groups)


def reference_masks(active):
  """Element masks: an element is kept when every group it is in is."""
  a1, a2 = active[:H1], active[H1:]
  return {'w1': np.broadcast_to(a1[None], (IN, H1)), 'b1': a1,
          'w2': a1[:, None] & a2[None], 'b2': a2,
          'w3': np.broadcast_to(a2[:, None], (H2, OUT)),
          'b3': np.ones(OUT, bool)}


def reference_scores(grads, params, score):
  """Per group: its members' g * w, summed (then |.|), or |g * w| summed."""
  f = (lambda x: x) if score == 'group_taylor' else np.abs
  t = {k: f(grads[k] * params[k]) for k in params}
  s1 = t['w1'].sum(0) + t['b1'] + t['w2'].sum(1)
  s2 = t['w2'].sum(0) + t['b2'] + t['w3'].sum(1)
  s = np.concatenate([s1, s2])
  return np.abs(s) if score == 'group_taylor' else s


@pytest.mark.parametrize('score,budget,nesterov', [
    ('group_taylor', 'params', True), ('weight_taylor', 'flops', False)])
def test_structured_gsm_step_against_a_numpy_reference(score, budget,
                                                       nesterov):
  rng = np.random.default_rng(5)
  params = random_params(rng)
  groups = groups_for(params)
  lr, ratio, beta, decay = 0.05, 2.0, 0.9, 1e-2
  tx = gsm_optax.gsm(lr, ratio, beta, decay, nesterov, groups=groups,
                     budget=budget, score=score)
  state = tx.init(params)
  step = jax.jit(tx.update)
  bufs = {k: np.zeros_like(v) for k, v in params.items()}
  kernels = ('w1', 'w2', 'w3')
  x = rng.normal(size=(8, IN)).astype(np.float32)
  y = rng.normal(size=(8, OUT)).astype(np.float32)
  loss = lambda p: jnp.mean((mlp(p, x) - y) ** 2)
  for _ in range(6):
    grads = jax.tree.map(np.asarray, jax.grad(loss)(params))
    scores = reference_scores(grads, params, score)
    active = reference_select(scores, ratio, budget)
    masks = reference_masks(active)
    expected = {}
    for k, w in params.items():
      # Passive slices lose their gradient; kernels decay everywhere, and
      # a passive group's biases decay too.
      d_p = np.where(masks[k], grads[k], 0.0)
      if k in kernels:
        d_p = d_p + decay * w
      else:
        d_p = d_p + np.where(masks[k], 0.0, decay * w)
      bufs[k] = beta * bufs[k] + d_p
      expected[k] = w - lr * (d_p + beta * bufs[k] if nesterov else bufs[k])
    updates, state = step(grads, state, params)
    params = {k: np.asarray(w + updates[k]) for k, w in params.items()}
    for k in params:
      np.testing.assert_allclose(params[k], expected[k], rtol=2e-5,
                                 atol=1e-6)
    found = gsm_optax.find_mask_state(state)
    assert int(found.num_active) == active.sum()


def test_passive_groups_glide_to_zero_and_the_prune_removes_them():
  rng = np.random.default_rng(6)
  params = random_params(rng)
  groups = groups_for(params)
  tx = gsm_optax.gsm(0.2, 2.0, 0.9, 5e-2, groups=groups, score_decay=0.9,
                     track_churn=True)
  state = tx.init(params)
  x = rng.normal(size=(64, IN)).astype(np.float32)
  y = np.tanh(x @ rng.normal(size=(IN, OUT))).astype(np.float32)
  loss = lambda p: jnp.mean((mlp(p, x) - y) ** 2)

  @jax.jit
  def train(params, state):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(600):
    params, state = train(params, state)
  active = np.asarray(gsm_optax.find_mask_state(state).active[0])
  check = gsm_optax.check_final_prune(params, 2.0, groups=groups, warn=False)
  assert check.ok, check
  pruned, masks = gsm_optax.prune(params, 2.0, groups=groups)
  # The prune keeps the last active set and zeroes the rest, biases too.
  kept = reference_masks(active)
  for k in params:
    np.testing.assert_array_equal(np.asarray(masks[k]), kept[k])
    assert np.all(np.asarray(pruned[k])[~kept[k]] == 0)
  np.testing.assert_allclose(mlp(pruned, x), mlp(params, x), atol=1e-4)
  assert float(gsm_optax.pruned_norm_share(pruned, 2.0, groups=groups)) == 0


def test_structured_gsm_composes_and_shards_without_gathering():
  from jax.sharding import Mesh  # pylint: disable=import-outside-toplevel
  from jax.sharding import NamedSharding  # pylint: disable=import-outside-toplevel
  from jax.sharding import PartitionSpec as P  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(7)
  big = {'w1': rng.normal(size=(64, 256)).astype(np.float32),
         'b1': np.zeros(256, np.float32),
         'w2': rng.normal(size=(256, 32)).astype(np.float32)}
  fn = lambda p, x: jax.nn.relu(x @ p['w1'] + p['b1']) @ p['w2']
  groups = gsm_optax.find_groups(fn, big, jnp.ones((8, 64)))
  tx = optax.MultiSteps(gsm_optax.gsm(0.1, 4.0, groups=groups,
                                      budget='flops'), 1)
  grads = jax.tree.map(lambda w: rng.normal(size=w.shape).astype(np.float32),
                       big)
  single = tx.update(grads, tx.init(big), big)[0]
  mesh = Mesh(np.array(jax.devices()[:8]), ('model',))
  spec = {'w1': P(None, 'model'), 'b1': P('model'), 'w2': P('model', None)}
  shard = lambda t: jax.tree.map(
      lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), t, spec)
  step = jax.jit(lambda g, s, p: tx.update(g, s, p)[0])
  sharded_args = (shard(grads), tx.init(shard(big)), shard(big))
  out = step(*sharded_args)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               jax.device_get(out), single)
  hlo = step.lower(*sharded_args).compile().as_text()
  # Only the scores of the groups (one per channel) may be gathered, to be
  # sorted; no array of weights is.
  import re  # pylint: disable=import-outside-toplevel
  gathered = [int(np.prod([int(d) for d in shape.split(',') if d]))
              for shape in re.findall(r'= \w+\[([\d,]*)\][^\n]* all-gather\(',
                                      hlo)]
  assert all(n <= groups.num_groups for n in gathered), gathered
  assert max(np.size(w) for w in big.values()) > groups.num_groups


@pytest.mark.parametrize('budget', ['params', 'flops'])
def test_the_group_prune_ranks_by_the_norm_asked(budget):
  params = random_params(np.random.default_rng(10))
  groups = groups_for(params)
  kept = {}
  for norm, size in (('l2', np.square), ('l1', np.abs)):
    # Per group, its members' |w| or w**2 summed, counted by hand.
    t = {k: size(v) for k, v in params.items()}
    scores = np.concatenate([t['w1'].sum(0) + t['b1'] + t['w2'].sum(1),
                             t['w2'].sum(0) + t['b2'] + t['w3'].sum(1)])
    expected = reference_masks(reference_select(scores, 2.0, budget))
    _, masks = gsm_optax.prune(params, 2.0, groups=groups, budget=budget,
                               group_norm=norm)
    for k in params:
      np.testing.assert_array_equal(np.asarray(masks[k]), expected[k])
    kept[norm] = np.concatenate([expected['b1'], expected['b2']])
  assert not np.array_equal(kept['l1'], kept['l2'])  # the norm matters here
  with pytest.raises(ValueError, match="`group_norm` must be one of"):
    gsm_optax.prune(params, 2.0, groups=groups, group_norm='l3')
  with pytest.raises(ValueError, match="single weights rank by"):
    gsm_optax.prune(params, 2.0, group_norm='l1')
