"""The speed scripts: they run, and time what they say they time."""

import os
import subprocess
import sys
from unittest import mock

import jax
import jax.numpy as jnp
import pytest

import gsm_optax
from gsm_optax._src.selection import native_radix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_search_kernels_times_every_pass_and_route():
  out = subprocess.run(
      [sys.executable, '-m', 'benchmarks.speed.search_kernels', '--size', '6000',
       '--repeats', '2'], cwd=ROOT, check=True, capture_output=True,
      text=True, env={**os.environ, 'XLA_FLAGS': ''}).stdout
  assert 'bfloat16 summed in float32 (the searches)' in out
  assert 'matrix compare times ones (the searches, XLA:CPU' in out
  import gsm_optax  # pylint: disable=import-outside-toplevel
  routes = [m for m in gsm_optax.SELECTION_METHODS if m != 'top_k']
  assert {'interpolate', 'bisect', 'radix'} <= set(routes)
  for method in routes:
    assert f"global_threshold(method='{method}')" in out
  # 9 passes; then 2 histograms, nonzero, cumsum, 3 top_k and one per route.
  assert out.count(' us\n') == 9 + 7 + len(routes)


def test_train_step_parts_mask_without_search_and_search_without_mask():
  import numpy as np  # pylint: disable=import-outside-toplevel

  from benchmarks.speed import train_step  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  params = {'w': rng.normal(size=(30, 20)).astype(np.float32),
            'b': rng.normal(size=(20,)).astype(np.float32)}
  grads = {k: rng.normal(size=v.shape).astype(np.float32)
           for k, v in params.items()}
  scores = np.abs(grads['w'] * params['w'])
  threshold = float(np.median(scores))
  tx = train_step.fixed_threshold_mask(threshold)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_array_equal(
      updates['w'], np.where(scores >= threshold, grads['w'], 0.0))
  np.testing.assert_array_equal(updates['b'], grads['b'])
  for ratio in (60.0, 7.0):  # Q = N / ratio: 10, then 85 of 600
    tx = train_step.fixed_threshold_mask(0.0, ratio=ratio)
    updates, state = tx.update(grads, tx.init(params), params)
    for k in params:
      np.testing.assert_array_equal(updates[k], grads[k])
    q = int(scores.size // ratio)
    assert float(state.threshold) == np.sort(scores.ravel())[::-1][q - 1]
    assert int(state.num_active) == np.sum(scores >= state.threshold)


def test_step_overhead_times_every_call_on_the_same_inputs():
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from benchmarks.speed import step_overhead  # pylint: disable=import-outside-toplevel
  import gsm_optax  # pylint: disable=import-outside-toplevel
  params = {'w': jnp.arange(12.0).reshape(3, 4), 'b': jnp.ones(4)}
  grads = jax.tree.map(jnp.ones_like, params)
  tx = gsm_optax.gsm(0.1, 2.0, momentum=0.9)
  state = tx.init(params)
  seen = []
  step = step_overhead.make_step(tx)
  def recording_step(p, s, g):
    seen.append(np.asarray(p['w']).copy())
    return step(p, s, g)
  step_overhead.time_steps({'gsm': (recording_step, params, state)}, grads, 3)
  # The step donates its inputs, yet the caller's arrays stay intact and
  # every call (one to compile, three timed) starts from the same values.
  np.testing.assert_array_equal(params['w'], np.arange(12.0).reshape(3, 4))
  assert len(seen) == 4
  for w in seen:
    np.testing.assert_array_equal(w, params['w'])


def test_retime_times_each_structured_result_at_its_own_widths(tmp_path):
  import json  # pylint: disable=import-outside-toplevel

  from benchmarks.accuracy import slim_report  # pylint: disable=import-outside-toplevel
  from benchmarks.speed import slim  # pylint: disable=import-outside-toplevel
  channels = [["['fc1']", 300, 82], ["['fc2']", 100, 24]]
  result = dict(model='lenet300', method='structured_gsm', ratio=4.0, seed=0,
                pruned_accuracy=0.89, diverged=False,
                slim={'channels': channels, 'params': [1.0, 1.0],
                      'flops': [1.0, 1.0],
                      'inference': {'batch': 1000, 'speedup': 9.0}})
  (tmp_path / 'a.json').write_text(json.dumps(result))
  (tmp_path / 'gsm.json').write_text(json.dumps(dict(model='lenet300')))
  assert slim.retime(str(tmp_path), batch=8, repeats=2) == 1
  # Timed again already: --missing leaves it, a plain retime does not.
  before = (tmp_path / 'a.json').read_text()
  assert slim.retime(str(tmp_path), batch=8, repeats=2, missing_only=True) == 0
  assert (tmp_path / 'a.json').read_text() == before
  timed = json.loads((tmp_path / 'a.json').read_text())
  retimed = timed['slim'].pop('retimed')
  assert timed == result  # nothing else changed
  assert retimed['batch'] == 8 and retimed['repeats'] == 2
  assert retimed['speedup'] == pytest.approx(
      retimed['dense_seconds'] / retimed['slim_seconds'])
  assert json.loads((tmp_path / 'gsm.json').read_text()) == dict(
      model='lenet300')  # not structured: untouched
  # The report takes the retimed speed-up, and says how it was timed.
  lines = slim_report.slim_lines([dict(timed, slim=dict(
      timed['slim'], retimed=retimed))])
  assert f"{retimed['speedup']:.2f}×" in lines[-2]
  assert 'batch 8' in lines[2] and '--retime' in lines[2]
  assert slim_report.speedups([result]) == [9.0]  # not retimed: its own
  # Widths of another model definition are refused, by name.
  bad = dict(result, slim=dict(result['slim'], channels=[
      ["['conv1']", 20, 10]]))
  (tmp_path / 'a.json').write_text(json.dumps(bad))
  with pytest.raises(ValueError, match='not the families'):
    slim.retime(str(tmp_path), batch=8, repeats=2)


@pytest.mark.skipif(not native_radix.applies([jnp.zeros(1)]),
                    reason='the native radix kernel is not built here')
def test_radix_routes_times_each_form_it_names():
  # Each form is what it says: the sampled one counts a window of
  # native_radix.WINDOW buckets (and one count above), the plain one not.
  from benchmarks.speed import radix_routes  # pylint: disable=import-outside-toplevel
  window = f'tensor<{(native_radix.WINDOW << 15) + 1}xi32>'
  params = {'kernel': jnp.ones((64, 32))}
  for form, sampled_from in radix_routes.FORMS.items():
    tx = gsm_optax.gsm(0.01, 10.0, method='radix')  # traced anew
    with mock.patch.object(native_radix, 'SAMPLED_FROM', sampled_from):
      text = jax.jit(tx.update).lower(params, tx.init(params),
                                      params).as_text()
    assert (window in text) == (form == 'sampled'), form
  n, seconds = radix_routes.time_forms({'kernel': (64, 32)}, repeats=1)
  assert n == 64 * 32 and set(seconds) == {'sgd', *radix_routes.FORMS}
  assert all(s > 0 for s in seconds.values())
