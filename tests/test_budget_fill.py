"""Structured selection on uneven costs: the budget is filled, and with
``round_to`` the kept widths are multiples, still within the budget."""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import model_zoo
import numpy as np
import pytest

import gsm_optax


def test_the_budget_is_filled_when_group_costs_are_very_uneven():
  # A first layer whose units each cost 50x a second-layer unit: the walk
  # meets an expensive unit that does not fit early; it goes on and fills
  # the budget with the cheap ones that do.
  wide = {'w1': np.ones((100, 6), np.float32), 'w2': np.ones((6, 8),
                                                             np.float32),
          'w3': np.ones((8, 2), np.float32)}
  net = lambda p, x: jax.nn.relu(jax.nn.relu(x @ p['w1']) @ p['w2']) @ p['w3']
  groups = gsm_optax.find_groups(net, wide, jnp.ones((1, 100)))
  flops = lambda n1, n2: 2 * (100 * n1 + n1 * n2 + n2 * 2)
  rng = np.random.default_rng(4)
  for ratio in (1.3, 2.0, 3.0, 4.0):
    target = flops(6, 8) / ratio
    for _ in range(5):
      active = np.asarray(groups.select(
          jnp.asarray(rng.exponential(size=14)), ratio, 'flops').active)
      n1, n2 = active[:6].sum(), active[6:].sum()
      assert flops(n1, n2) <= target * (1 + 1e-6)
      # Nothing left out fits: within one group's cost of the budget.
      if n1 < 6:
        assert flops(n1 + 1, n2) > target
      if n2 < 8:
        assert flops(n1, n2 + 1) > target
  # prune on a conv net (LeNet-5's first-layer channels cost the most):
  # the kept FLOPs end within one group's cost of the budget.
  graphdef, state = model_zoo.model('lenet5')
  forward = lambda p, x: nnx.merge(graphdef, p)(x)
  groups = gsm_optax.find_groups(forward, state, jnp.ones((1, 28, 28, 1)))
  for ratio in (2.0, 4.0):
    _, masks = gsm_optax.prune(state, ratio, groups=groups, budget='flops')
    kept = gsm_optax.structure_report(jax.tree.map(
        lambda p, m: p * m, state, masks), groups).total_flops[1]
    target = groups.totals['flops'] / ratio
    assert target - groups.costs['flops'].max() <= kept <= target, (
        ratio, kept, target)


def test_round_to_keeps_widths_in_multiples_within_the_budget():
  # Two hidden layers of 24 and 20 units; round_to=8: each keeps 8, 16,
  # 24 (or all 20) of its best units, the budget holds, and no next run
  # of 8 (or the last 4) would still fit.
  p = {'w1': np.ones((30, 24), np.float32), 'w2': np.ones((24, 20),
                                                          np.float32),
       'w3': np.ones((20, 3), np.float32)}
  net = lambda p, x: jax.nn.relu(jax.nn.relu(x @ p['w1']) @ p['w2']) @ p['w3']
  groups = gsm_optax.find_groups(net, p, jnp.ones((1, 30)), round_to=8)
  flops = lambda a, b: 2 * (30 * a + a * b + b * 3)
  allowed = ({8, 16, 24}, {8, 16, 20})
  select = jax.jit(lambda s, r: groups.select(s, r, 'flops').active)
  rng = np.random.default_rng(7)
  for ratio in (1.2, 1.7, 2.5, 3.5):  # 3.84: 8 and 8 units
    for _ in range(4):
      scores = rng.exponential(size=44)
      active = np.asarray(select(jnp.asarray(scores), jnp.float32(ratio)))
      kept = active[:24], active[24:]
      a, b = kept[0].sum(), kept[1].sum()
      assert a in allowed[0] and b in allowed[1], (ratio, a, b)
      assert flops(a, b) <= flops(24, 20) / ratio * (1 + 1e-6)
      for chosen, part in zip(kept, (scores[:24], scores[24:])):
        assert part[chosen].min() >= part[~chosen].max(initial=-1), ratio
      if a < 24:
        assert flops(a + 8, b) > flops(24, 20) / ratio
      if b < 20:
        assert flops(a, min(b + 8, 20)) > flops(24, 20) / ratio
  # The smallest model is 8 and 8 units; a ratio past it names the limit.
  with pytest.raises(ValueError, match='use a ratio of at most'):
    groups.select(jnp.ones(44), flops(24, 20) / flops(8, 8) * 1.01, 'flops')
  with pytest.raises(ValueError, match='`round_to`=0 must be an int'):
    gsm_optax.find_groups(net, p, jnp.ones((1, 30)), round_to=0)
  # prune and slim read it from the groups: widths of 8, 16, 24, 20.
  w = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), p)
  pruned, _ = gsm_optax.prune(w, 2.0, groups=groups, budget='flops')
  _, _, info = gsm_optax.slim(net, pruned, groups)
  assert [c[2] for c in info.channels][0] in allowed[0]
  assert [c[2] for c in info.channels][1] in allowed[1]
