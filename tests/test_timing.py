"""The one timing helper: alternation, warm-up, untimed setup, medians."""

import pytest

from gsm_optax._src import timing


def test_calls_alternate_warmup_and_setup_are_not_timed(monkeypatch):
  now = [0.0]  # a fake clock: only the calls and setup move it
  log = []

  def perf_counter():
    return now[0]

  def call(name, cost):
    def run(*args):
      log.append((name, args))
      now[0] += cost
      return 0
    return run

  def setup():
    now[0] += 1000.0  # setup's time never reaches a median
    return ('batch',)

  monkeypatch.setattr(timing.time, 'perf_counter', perf_counter)
  costs = iter([5.0, 1.0, 2.0, 3.0])  # a's calls: compile, then 1, 2, 3
  def a(*args):
    log.append(('a', args))
    now[0] += next(costs)
  seconds = timing.median_seconds({'a': a, 'b': call('b', 7.0)}, repeats=3,
                                  warmup=1, setup={'b': setup})
  assert seconds == {'a': 2.0, 'b': 7.0}
  assert [n for n, _ in log] == ['a', 'b'] * 4  # alternated, 1 + 3 rounds
  assert all(args == ('batch',) for n, args in log if n == 'b')
  assert all(args == () for n, args in log if n == 'a')


def test_bad_arguments_name_the_argument():
  with pytest.raises(ValueError, match='`repeats`=0'):
    timing.median_seconds({'a': lambda: 0}, repeats=0)
  with pytest.raises(ValueError, match=r"`setup` names \['c'\]"):
    timing.median_seconds({'a': lambda: 0}, 1, setup={'c': tuple})
