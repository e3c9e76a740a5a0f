"""Argument checks that name the argument and the fix."""

from typing import Any

import jax
import numpy as np


def check_number(name: str, value: Any, low: float, high: float, hint: str,
                 schedule: bool = False) -> None:
  """Raises unless a concrete ``value`` is a real number in ``[low, high)``.

  A traced value (from `optax.inject_hyperparams`) passes: it is not known
  here. With ``schedule``, a callable (an optax schedule) passes too.

  Raises:
    TypeError: ``value`` is not a real scalar (a bool, a string, an array).
    ValueError: it lies outside ``[low, high)`` or is NaN.
  """
  if isinstance(value, jax.core.Tracer) or (schedule and callable(value)):
    return
  kind = 'a number or an optax schedule' if schedule else 'a number'
  if (isinstance(value, (bool, np.bool_, str, bytes)) or np.ndim(value) != 0
      or not np.issubdtype(np.asarray(value).dtype, np.number)):
    raise TypeError(f'`{name}` must be {kind} in [{low:g}, {high:g}) '
                    f'({hint}); got {value!r}.')
  if not low <= float(value) < high:
    raise ValueError(f'`{name}` must be {kind} in [{low:g}, {high:g}) '
                     f'({hint}); got {value!r}.')
