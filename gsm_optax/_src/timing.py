"""Timing, one way for every script: calls alternated, medians after warm-up.

The speed benchmarks, the deploy report and `slim(..., measure=)` time
with `median_seconds` only, so every ratio is measured the same way: each
round calls every function once in turn (so a noisy neighbour slows them
all alike), the first rounds compile and are not timed, and what a call
needs that must not be timed (fresh copies of donated inputs, the next
batch) comes from its ``setup``.
"""

import statistics
import time
from typing import Any, Callable, Mapping, Optional

import jax


def median_seconds(calls: Mapping[str, Callable[..., Any]], repeats: int,
                   warmup: int = 1,
                   setup: Optional[Mapping[str, Callable[[], tuple]]] = None
                   ) -> dict[str, float]:
  """Median wall time of each call, the calls alternated round by round.

  Args:
    calls: name -> function. Each round calls every function once, in
      this order, and waits for its result (`jax.block_until_ready`).
    repeats: the timed rounds.
    warmup: untimed rounds first (compilation, caches).
    setup: name -> a function returning that call's arguments, run before
      each of its calls and not timed; calls without one take none.

  Returns:
    name -> median seconds over the timed rounds.

  Example:
    >>> import jax.numpy as jnp
    >>> from gsm_optax._src.timing import median_seconds
    >>> x = jnp.ones((64, 64))
    >>> seconds = median_seconds({'matmul': lambda: x @ x, 'add': lambda: x + x},
    ...                          repeats=5)
    >>> sorted(seconds)
    ['add', 'matmul']
  """
  if repeats < 1 or warmup < 0:
    raise ValueError(f'`repeats`={repeats} must be at least 1 and '
                     f'`warmup`={warmup} at least 0.')
  setup = dict(setup or {})
  unknown = sorted(set(setup) - set(calls))
  if unknown:
    raise ValueError(f'`setup` names {unknown}, which are not in `calls` '
                     f'({sorted(calls)}).')
  times = {name: [] for name in calls}
  for round_ in range(warmup + repeats):
    for name, call in calls.items():
      args = setup[name]() if name in setup else ()
      start = time.perf_counter()
      jax.block_until_ready(call(*args))
      elapsed = time.perf_counter() - start
      if round_ >= warmup:
        times[name].append(elapsed)
  return {name: statistics.median(t) for name, t in times.items()}
