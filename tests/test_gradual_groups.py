"""Gradual channel pruning: `gradual_magnitude_pruning` with `groups`,
against the selection rule walked in NumPy (`test_structured`)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_structured import cost
from test_structured import groups_for
from test_structured import H1
from test_structured import H2
from test_structured import reference_select

import gsm_optax

# Each hidden unit's members: (leaf, axis) of its weights (test_structured.mlp).
UNITS = ([('w1', 1), ('b1', 0), ('w2', 0)], [('w2', 1), ('b2', 0), ('w3', 0)])


def per_unit(values):
  """One number per hidden unit: ``values`` summed over its members."""
  out = []
  for members, size in zip(UNITS, (H1, H2)):
    out += [sum(np.take(values[leaf], i, axis=axis).sum()
                for leaf, axis in members) for i in range(size)]
  return np.array(out)


def removed_are_zero(params, kept):
  for (members, size), offset in zip(zip(UNITS, (H1, H2)), (0, H1)):
    for i in range(size):
      if not kept[offset + i]:
        for leaf, axis in members:
          assert not np.take(np.asarray(params[leaf]), i, axis=axis).any()


def params_tree(seed=0):
  rng = np.random.default_rng(seed)
  shapes = {'w1': (5, H1), 'b1': (H1,), 'w2': (H1, H2), 'b2': (H2,),
            'w3': (H2, 2), 'b3': (2,)}
  return {k: jnp.asarray(rng.normal(size=s), jnp.float32)
          for k, s in shapes.items()}


@pytest.mark.parametrize('budget', ['params', 'flops'])
@pytest.mark.parametrize('score', ['magnitude', 'group_taylor',
                                   'weight_taylor'])
def test_one_cut_keeps_the_groups_the_rule_ranks_first(budget, score):
  params = params_tree()
  groups = groups_for(params)
  rng = np.random.default_rng(1)
  updates = {k: jnp.asarray(rng.normal(size=v.shape) * 0.1, jnp.float32)
             for k, v in params.items()}
  tx = gsm_optax.gradual_magnitude_pruning(
      2.5, begin_step=0, end_step=0, groups=groups, budget=budget,
      score=score)
  out, state = tx.update(updates, tx.init(params), params)
  new = {k: np.asarray(params[k] + updates[k], np.float64) for k in params}
  u = {k: np.asarray(v, np.float64) for k, v in updates.items()}
  scores = {'magnitude': per_unit({k: v ** 2 for k, v in new.items()}),
            'group_taylor': np.abs(per_unit({k: u[k] * new[k] for k in u})),
            'weight_taylor': per_unit({k: np.abs(u[k] * new[k]) for k in u})}
  kept = reference_select(scores[score], 2.5, budget)
  pruned = optax.apply_updates(params, out)
  k1, k2 = kept[:H1], kept[H1:]
  element_kept = {'w1': k1[None, :], 'b1': k1, 'w2': k1[:, None] & k2[None, :],
                  'b2': k2, 'w3': k2[:, None], 'b3': True}
  for k in params:  # kept elements take the update as it is, the rest are 0
    np.testing.assert_allclose(np.asarray(pruned[k]),
                               np.where(element_kept[k], new[k], 0), rtol=1e-6)
  assert cost(kept[:H1].sum(), kept[H1:].sum(), budget) <= cost(
      H1, H2, budget) / 2.5
  np.testing.assert_array_equal(state.masks['b3'], True)  # not in a group


def test_the_schedule_shrinks_the_model_and_a_removed_group_stays_removed():
  params = params_tree(2)
  groups = groups_for(params)
  x = jnp.asarray(np.random.default_rng(3).normal(size=(8, 5)), jnp.float32)
  loss = lambda p: jnp.mean(
      (jnp.tanh(jax.nn.relu(x @ p['w1'] + p['b1']) @ p['w2'] + p['b2'])
       @ p['w3'] + p['b3'] - 1.0) ** 2)
  ratio, end = 4.0, 30
  tx = optax.chain(optax.sgd(0.05, momentum=0.9),
                   gsm_optax.gradual_magnitude_pruning(
                       ratio, 0, end, update_every=5, groups=groups,
                       budget='flops', score='group_taylor'))
  state = tx.init(params)
  step = jax.jit(lambda p, s: tx.update(jax.grad(loss)(p), s, p))
  kept_before = np.ones(H1 + H2, bool)
  costs = []
  for t in range(end + 10):
    updates, state = step(params, state)
    params = optax.apply_updates(params, updates)
    masks = state[1].masks
    kept = np.concatenate([np.asarray(masks['b1']), np.asarray(masks['b2'])])
    assert not (kept & ~kept_before).any()  # never revived
    removed_are_zero(params, kept)
    keep = float(gsm_optax.cubic_keep_fraction(t, ratio, 0, end))
    n1, n2 = kept[:H1].sum(), kept[H1:].sum()
    if t % 5 == 0 and t <= end:  # a mask update: within the schedule's budget
      assert cost(n1, n2, 'flops') <= (cost(H1, H2, 'flops') * keep *
                                       (1 + 1e-6))
    costs.append(cost(n1, n2, 'flops'))
    kept_before = kept
  assert costs == sorted(costs, reverse=True)
  assert costs[-1] <= cost(H1, H2, 'flops') / ratio


def test_bad_arguments_name_the_fix():
  params = params_tree()
  with pytest.raises(ValueError, match='pass `groups`'):
    gsm_optax.gradual_magnitude_pruning(2.0, 0, 10, score='group_taylor')
  with pytest.raises(ValueError, match='`score` must be one of'):
    gsm_optax.gradual_magnitude_pruning(2.0, 0, 10, score='l1')
  with pytest.raises(ValueError, match='leave `global_ranking=True`'):
    gsm_optax.gradual_magnitude_pruning(2.0, 0, 10, global_ranking=False,
                                        groups=groups_for(params))
  with pytest.raises(ValueError, match="`budget='flops'` needs `groups`"):
    gsm_optax.gradual_magnitude_pruning(2.0, 0, 10, budget='flops')
  tx = gsm_optax.gradual_magnitude_pruning(1000.0, 0, 10,
                                           groups=groups_for(params))
  with pytest.raises(ValueError, match='use a ratio of at most'):
    tx.init(params)
