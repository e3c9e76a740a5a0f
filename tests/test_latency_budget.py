"""``budget='latency'``: a table of each product's time at a grid of widths
(`measure_latency`, cached per device) read as a cost beside params and
FLOPs, by the same selection. Long because the table's two kinds
(products, whole model with pairs), its reading, the selection under it
and the measuring are one feature, checked against made-up devices."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import interpolate

import gsm_optax
from gsm_optax._src import timing


def mlp():
  params = {'w1': np.ones((30, 24), np.float32),
            'w2': np.ones((24, 20), np.float32),
            'w3': np.ones((20, 3), np.float32)}
  net = lambda p, x: jax.nn.relu(jax.nn.relu(x @ p['w1']) @ p['w2']) @ p['w3']
  return net, params


def staircase_table(groups, step=8):
  """A made-up device: a product's time grows in steps of ``step``
  channels of each width it depends on (as vector units do), with a dip
  at one point that the monotone envelope must remove."""
  entries = []
  for families, _, _ in groups.product_operands():
    grids = tuple(tuple(range(1, groups.families[f].size + 1))
                  for f in families)
    mesh = np.meshgrid(*[np.asarray(g, float) for g in grids], indexing='ij')
    seconds = 1.0 + sum(np.ceil(m / step) for m in mesh)
    entries.append(gsm_optax.LatencyEntry('made up', tuple(families), grids,
                                          seconds.tolist()))
  return gsm_optax.LatencyTable('made up', tuple(entries))


def test_the_table_is_read_as_a_cost_interpolated_and_monotone():
  net, params = mlp()
  groups = gsm_optax.find_groups(net, params, jnp.ones((1, 30)))
  assert [fs for fs, _, _ in groups.product_operands()] == [[0], [0, 1], [1]]
  # A coarse grid, with dips (a wider layer measured faster): the cost at
  # a width is the least at it or any wider one, interpolated multilinearly.
  grid1, grid2 = (1, 8, 16, 24), (1, 10, 20)
  times = np.array([[1.0, 2.0, 3.0], [2.0, 1.5, 4.0], [5.0, 6.0, 6.5],
                    [7.0, 9.0, 9.5]])
  table = gsm_optax.LatencyTable('made up', (
      gsm_optax.LatencyEntry('w1', (0,), (grid1,), [1.0, 3.0, 2.0, 4.0]),
      gsm_optax.LatencyEntry('w2', (0, 1), (grid1, grid2), times.tolist()),
      gsm_optax.LatencyEntry('w3', (1,), (grid2,), [0.5, 0.5, 1.0])))
  cost = groups.with_latency(table)
  suffix_min = lambda a, axis: np.flip(np.minimum.accumulate(
      np.flip(a, axis), axis), axis)
  envelope = suffix_min(suffix_min(times, 0), 1)
  assert envelope[0, 0] == 1.0 and envelope[0, 1] == 1.5  # the dip's level
  assert envelope[1, 0] == 1.5 and envelope[1, 2] == 4.0
  reference = (
      interpolate.RegularGridInterpolator(
          (grid1,), [1.0, 2.0, 2.0, 4.0]),
      interpolate.RegularGridInterpolator((grid1, grid2), envelope),
      interpolate.RegularGridInterpolator((grid2,), [0.5, 0.5, 1.0]))
  rng = np.random.default_rng(0)
  counts = np.stack([rng.integers(1, 25, 50), rng.integers(1, 21, 50)],
                    axis=1).astype(np.float64)
  expected = (reference[0](counts[:, :1]) + reference[1](counts) +
              reference[2](counts[:, 1:]))
  latency = cost.polynomials['latency']
  np.testing.assert_allclose(latency.value(counts), expected, rtol=1e-12)
  np.testing.assert_allclose(latency.value(jnp.asarray(counts, jnp.float32)),
                             expected, rtol=1e-6)
  assert cost.totals['latency'] == 4.0 + 9.5 + 1.0
  # Non-decreasing in every width, the property the budget fill needs.
  for a in range(1, 24):
    for b in range(1, 20):
      here = latency.value(np.array([a, b], float))
      assert latency.value(np.array([a + 1, b], float)) >= here - 1e-12
      assert latency.value(np.array([a, b + 1], float)) >= here - 1e-12
  # The params and FLOPs budgets are the groups' own, untouched.
  assert cost.totals['flops'] == groups.totals['flops']
  np.testing.assert_array_equal(cost.costs['flops'], groups.costs['flops'])


@pytest.mark.parametrize('round_to', [1, 8])
def test_prune_under_latency_fills_the_budget(round_to):
  # The staircase device: kept latency within the budget, and no left-out
  # channel (or run of round_to) would still fit.
  net, params = mlp()
  groups = gsm_optax.find_groups(net, params, jnp.ones((1, 30)),
                                 round_to=round_to)
  groups = groups.with_latency(staircase_table(groups))
  latency = groups.polynomials['latency']
  total = groups.totals['latency']
  step = lambda n, size: min(size, n + round_to) if round_to > 1 else n + 1
  rng = np.random.default_rng(1)
  for ratio in (1.2, 1.5, 2.0):
    target = total / ratio
    for _ in range(2):
      p = jax.tree.map(lambda x: x * rng.uniform(0.1, 1, x.shape).astype(
          np.float32), params)
      pruned, _ = gsm_optax.prune(p, ratio, groups=groups, budget='latency')
      a = int(np.sum(np.any(pruned['w1'] != 0, axis=0)))
      b = int(np.sum(np.any(pruned['w2'] != 0, axis=0)))
      if round_to > 1:
        assert a in (8, 16, 24) and b in (8, 16, 20), (a, b)
      assert latency.value(np.array([a, b], float)) <= target * (1 + 1e-6)
      if a < 24:
        assert latency.value(np.array([step(a, 24), b], float)) > target
      if b < 20:
        assert latency.value(np.array([a, step(b, 20)], float)) > target


def test_structured_gsm_masks_under_latency():
  # GSM's mask (keep_top_taylor, as gsm chains it) reads the same budget:
  # the gradient passes to the units of the latency selection.
  net, params = mlp()
  rng = np.random.default_rng(2)
  params = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(
      np.float32), params)  # no ties between units
  groups = gsm_optax.find_groups(net, params, jnp.ones((1, 30)))
  groups = groups.with_latency(staircase_table(groups))
  tx = gsm_optax.keep_top_taylor(2.0, groups=groups, budget='latency')
  x = jnp.asarray(rng.normal(size=(16, 30)), jnp.float32)
  grads = jax.grad(lambda p: jnp.sum(net(p, x) ** 2))(params)
  updates, _ = tx.update(grads, tx.init(params), params)
  active = np.asarray(groups.select(groups.scores(
      dict(enumerate(jax.tree.leaves(grads))), params), 2.0, 'latency').active)
  passes = np.any(np.asarray(updates['w1']) != 0, axis=0)
  np.testing.assert_array_equal(passes, active[:24])
  assert 0 < active.sum() < 44  # some units lost their gradient
  latency = groups.polynomials['latency']
  kept = np.array([active[:24].sum(), active[24:].sum()], float)
  assert latency.value(kept) <= groups.totals['latency'] / 2 * (1 + 1e-6)


def test_measured_once_and_cached(tmp_path, monkeypatch):
  net, params = mlp()
  groups = gsm_optax.find_groups(net, params, jnp.ones((64, 30)), round_to=8)
  cache = tmp_path / 'latency.json'
  table = gsm_optax.measure_latency(groups, points=3, repeats=2,
                                    cache=str(cache))
  assert table.device == jax.devices()[0].device_kind
  assert [e.families for e in table.entries] == [(0,), (0, 1), (1,)]
  # Widths at multiples of round_to, the smallest allowed to the whole.
  assert [e.grids for e in table.entries] == [
      ((8, 16, 24),), ((8, 16, 24), (8, 16, 20)), ((8, 16, 20),)]
  assert np.shape(table.entries[1].seconds) == (3, 3)
  assert all(t > 0 for e in table.entries for t in np.ravel(e.seconds))
  stored = json.loads(cache.read_text())
  assert len(stored) == 3 + 9 + 3  # one time per distinct product shape
  # Read back, not measured again.
  monkeypatch.setattr(timing, 'median_seconds', lambda *a, **k: 1 / 0)
  again = gsm_optax.measure_latency(groups, points=3, repeats=2,
                                    cache=str(cache))
  assert again == table
  assert not list(tmp_path.glob('*.tmp'))
  # A measured table prunes: halfway to the fastest model it allows (how
  # far that is depends on the machine).
  cost = groups.with_latency(table)
  latency = cost.polynomials['latency']
  reachable = cost.totals['latency'] / latency.value(np.array([8.0, 8.0]))
  ratio = 1 + (reachable - 1) / 2
  rng = np.random.default_rng(3)  # no ties between units
  params = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(
      np.float32), params)
  pruned, _ = gsm_optax.prune(params, ratio, groups=cost, budget='latency')
  assert pruned['w1'].shape == (30, 24)
  kept = np.array([np.sum(np.any(pruned['w1'] != 0, axis=0)),
                   np.sum(np.any(pruned['w2'] != 0, axis=0))], float)
  assert latency.value(kept) <= cost.totals['latency'] / ratio * (1 + 1e-6)


def test_latency_errors_name_the_fix():
  net, params = mlp()
  groups = gsm_optax.find_groups(net, params, jnp.ones((1, 30)))
  with pytest.raises(ValueError, match=r'groups.with_latency\(gsm_optax.'
                     r'measure_latency\(groups\)\)'):
    gsm_optax.prune(params, 2.0, groups=groups, budget='latency')
  with pytest.raises(ValueError, match="`budget='latency'` needs `groups`"):
    gsm_optax.prune(params, 2.0, budget='latency')
  other = gsm_optax.find_groups(
      lambda p, x: jax.nn.relu(x @ p['w1']) @ p['w2'],
      {'w1': params['w1'], 'w2': np.ones((24, 3), np.float32)},
      jnp.ones((1, 30)))
  with pytest.raises(ValueError, match='not measured on these groups'):
    groups.with_latency(staircase_table(other))
  cost = groups.with_latency(staircase_table(groups))
  fastest = cost.polynomials['latency'].value(np.array([1.0, 1.0]))
  with pytest.raises(ValueError, match=r'asks for .* µs of latency of '
                     r'[\d,.]+ µs.* at most ' +
                     f"{cost.totals['latency'] / fastest:.3g}"):
    gsm_optax.prune(params, 100.0, groups=cost, budget='latency')
  with pytest.raises(ValueError, match='`points`=1 must be an int >= 2'):
    gsm_optax.measure_latency(groups, points=1)


def test_the_whole_slim_model_timed_per_family_and_pair():
  net, params = mlp()
  x = jnp.ones((64, 30))
  groups = gsm_optax.find_groups(net, params, x, round_to=8)
  table = gsm_optax.measure_latency(groups, points=3, repeats=2,
                                    model=(net, params, x))
  assert table.kind == 'model'
  assert [(e.families, e.grids) for e in table.entries] == [
      ((), ()), ((0,), ((8, 16, 24),)), ((1,), ((8, 16, 20),)),
      ((0, 1), ((8, 16, 24), (8, 16, 20)))]
  full = table.entries[0].seconds
  assert full > 0
  assert all(e.seconds[-1] == 0.0 for e in table.entries[1:3])
  cross = np.asarray(table.entries[3].seconds)
  assert np.all(cross[-1] == 0.0) and np.all(cross[:, -1] == 0.0)
  cost = groups.with_latency(table)
  assert cost.totals['latency'] == full
  # At grid points: the whole model plus each family's change plus the
  # pair's cross term, which with the changes makes the pair's joint time
  # (non-decreasing in both widths).
  change = [np.asarray(e.seconds) for e in table.entries[1:3]]
  joint = change[0][:, None] + change[1][None, :] + cross
  assert np.all(np.diff(joint, axis=0) >= 0)
  assert np.all(np.diff(joint, axis=1) >= 0)
  for i, a in enumerate((8, 16, 24)):
    for j, b in enumerate((8, 16, 20)):
      assert cost.polynomials['latency'].value(np.array([a, b], float)) == (
          pytest.approx(full + joint[i, j], rel=1e-12))
  with pytest.raises(ValueError, match='not measured on these groups'):
    gsm_optax.find_groups(net, params, x).with_latency(table._replace(
        entries=table.entries + (table.entries[1]._replace(families=(5,)),)))


def test_whole_model_table_exact_where_time_is_a_sum_over_layers(
    monkeypatch):
  # A made-up device on which a model's time is its kernels' sizes (each
  # matmul's in x out) plus its biases': every term depends on one family
  # or two, as a chain of layers' times does. The table measured on it
  # (the timer replaced) gives that time at every width, between grid
  # points too (multilinear, exact on products of two widths); the
  # families' changes alone would count the middle layers' saving twice.
  def made_up_seconds(calls, repeats):
    del repeats
    return {name: sum(float(np.prod(np.shape(leaf))) for leaf in
                      jax.tree.leaves(call.__defaults__[1]))
            for name, call in calls.items()}
  monkeypatch.setattr(timing, 'median_seconds', made_up_seconds)
  params = {'w1': np.ones((30, 24), np.float32), 'b1': np.ones(24, np.float32),
            'w2': np.ones((24, 20), np.float32), 'b2': np.ones(20, np.float32),
            'w3': np.ones((20, 16), np.float32), 'b3': np.ones(16, np.float32),
            'w4': np.ones((16, 3), np.float32)}
  def net(p, x):
    for i in (1, 2, 3):
      x = jax.nn.relu(x @ p[f'w{i}'] + p[f'b{i}'])
    return x @ p['w4']
  x = jnp.ones((4, 30))
  groups = gsm_optax.find_groups(net, params, x)
  table = gsm_optax.measure_latency(groups, points=3, repeats=1,
                                    model=(net, params, x))
  assert [e.families for e in table.entries] == [
      (), (0,), (1,), (2,), (0, 1), (1, 2)]
  truth = lambda a, b, c: 31 * a + (a + 1) * b + (b + 1) * c + 3 * c
  latency = groups.with_latency(table).polynomials['latency']
  rng = np.random.default_rng(0)
  widths = np.stack([rng.integers(1, n + 1, 50) for n in (24, 20, 16)], 1)
  np.testing.assert_allclose(latency.value(widths.astype(np.float64)),
                             truth(*widths.T), rtol=1e-9)
  additive = groups.with_latency(table._replace(
      entries=table.entries[:4])).polynomials['latency']
  a, b, c = widths.T
  np.testing.assert_allclose(
      additive.value(widths.astype(np.float64)),
      truth(a, b, c) - (a - 24) * (b - 20) - (b - 20) * (c - 16), rtol=1e-9)
  # Pruned under it, the kept model's true time is within the budget.
  groups = groups.with_latency(table)
  for ratio in (2.0, 6.0):
    pruned, _ = gsm_optax.prune(
        jax.tree.map(lambda w: w * rng.uniform(0.1, 1, w.shape).astype(
            np.float32), params), ratio, groups=groups, budget='latency')
    kept = [int(np.sum(np.any(pruned[f'w{i}'] != 0, axis=0)))
            for i in (1, 2, 3)]
    assert truth(*kept) <= truth(24, 20, 16) / ratio * (1 + 1e-6), kept


def test_channels_free_beside_full_widths_are_not_kept_all_at_once():
  # fc1's channels save nothing while fc2 is whole (its product's time is
  # flat there) but cost time once fc2 narrows: they rank after the forced
  # channels, one run at a time, and the budget holds. (They used to tie
  # with the forced ones and be kept all at once: 24 and 8 channels,
  # 78.8 of a 73.1 budget.)
  net, params = mlp()
  groups = gsm_optax.find_groups(net, params, jnp.ones((1, 30)), round_to=8)
  g0, g1 = (8, 16, 24), (8, 16, 20)
  table = gsm_optax.LatencyTable('made up', (
      gsm_optax.LatencyEntry('w1', (0,), (g0,), [21.6, 21.6, 21.6]),
      gsm_optax.LatencyEntry('w2', (0, 1), (g0, g1), [[20.2, 29.6, 41.4],
                                                      [28.2, 29.6, 41.4],
                                                      [41.4, 41.4, 41.4]]),
      gsm_optax.LatencyEntry('w3', (1,), (g1,), [15.7, 37.1, 37.1])))
  groups = groups.with_latency(table)
  latency = groups.polynomials['latency']
  assert groups.unit_costs['latency'][:3].tolist() == [0, 0, 0]
  ratio = groups.totals['latency'] / 73.1
  rng = np.random.default_rng(0)
  for _ in range(3):
    p = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32),
                     params)
    pruned, _ = gsm_optax.prune(p, ratio, groups=groups, budget='latency')
    kept = [int(np.sum(np.any(pruned[w] != 0, axis=0))) for w in ('w1', 'w2')]
    assert latency.value(np.array(kept, float)) <= 73.1 * (1 + 1e-6), kept
    assert kept == [16, 8]  # and the fill took what still fits
