"""How many weights a compression ratio keeps: Q = floor(N / C), exactly.

The count is exact for the ratio's own value, concrete or traced: a Python
float is taken as the float64 number it is, a traced float32 ratio as its
float32 value, so a ratio that both represent gives the same Q either way.
No floating-point division is involved, so no slack is needed: a C just
above N / k keeps k - 1 weights, a C equal to N / k keeps k.
"""

import fractions
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def validate_ratio(ratio: Any) -> None:
  """Raises a clear error unless a concrete ``ratio`` is a real number >= 1.

  A traced ratio (under `jax.jit`, e.g. from `optax.inject_hyperparams`)
  passes here; `num_to_keep` checks its value when the step runs.

  Raises:
    ValueError: ``ratio`` is not a real scalar (a string, None, a schedule,
      an array of several values), or is NaN or below 1.
  """
  if isinstance(ratio, jax.core.Tracer):
    return
  if callable(ratio):
    raise ValueError(
        '`ratio` must be a number, not a callable. A schedule for the ratio '
        '(a warm-up from dense to C) works through optax.inject_hyperparams: '
        '`optax.inject_hyperparams(gsm_optax.gsm)(learning_rate=..., '
        'ratio=schedule)` evaluates it every step.')
  value = _concrete_value(ratio)
  if not value >= 1:  # also NaN
    raise ValueError(
        f'`ratio` is the global compression ratio C >= 1 (keep N / C weights); '
        f'got {ratio}. Use e.g. ratio=10.0 to keep one weight in ten.')


def _concrete_value(ratio: Any) -> float:
  """``ratio`` as a Python float, exactly, or a ValueError naming it."""
  if isinstance(ratio, (bool, np.bool_)) or isinstance(ratio, (str, bytes)):
    ok = False
  elif isinstance(ratio, numbers.Real):
    ok = True
  else:
    shape = getattr(ratio, 'shape', None)
    dtype = getattr(ratio, 'dtype', None)
    ok = (shape == () and dtype is not None and
          (jnp.issubdtype(dtype, jnp.floating) or
           jnp.issubdtype(dtype, jnp.integer)))
  if not ok:
    raise ValueError(
        '`ratio` must be a real number >= 1 (a Python float or int, or a '
        f'scalar float array); got {ratio!r} of type {type(ratio).__name__}. '
        'Use e.g. ratio=60.0.')
  return float(np.asarray(ratio))


def num_to_keep(num_prunable: int, ratio: Any) -> Any:
  """Q = floor(N / C), the number of weights GSM keeps active.

  A concrete ratio gives a Python int and is checked here: Q must be at
  least 1. A traced ratio gives a traced int32 (int64 for a float64 ratio)
  computed with integer arithmetic on the ratio's bits (`floor_divide`);
  since an error cannot be raised inside `jit` by ordinary means, a traced
  ratio that is NaN, below 1 or keeps nothing raises through
  `jax.debug.callback` when the step runs, and Q is clipped to [1, N].

  Args:
    num_prunable: N, a Python int.
    ratio: C, a real number >= 1, concrete or traced.

  Returns:
    Q, a Python int for a concrete ratio, else a traced integer scalar.

  Raises:
    ValueError: for a concrete ratio that `validate_ratio` refuses or that
      keeps no weight.
  """
  if isinstance(num_prunable, (bool, np.bool_)) or not isinstance(
      num_prunable, (numbers.Integral, jax.core.Tracer)):
    raise TypeError(
        '`num_prunable` is N, the number of prunable weights (a Python '
        f'int), not a {type(num_prunable).__name__}. For a params tree: '
        '`num_to_keep(sum(x.size for x in jax.tree.leaves(params) if '
        'x.ndim >= 2), ratio)`, or `sparsity_report(params).prunable_size`.')
  if isinstance(ratio, jax.core.Tracer):
    q = floor_divide(num_prunable, ratio)
    bad = jnp.logical_not(ratio >= 1) | (q < 1)
    # The callback runs only on a bad ratio (under `vmap` the cond becomes a
    # select that runs it always, hence the check inside it too).
    jax.lax.cond(bad, lambda b, r: jax.debug.callback(
        _raise_traced_ratio, b, r, num_prunable), lambda b, r: None,
                 bad, ratio)
    return jnp.clip(q, 1, num_prunable)
  validate_ratio(ratio)
  q = floor_divide(num_prunable, ratio)
  if q < 1:
    raise ValueError(
        f'`ratio`={ratio} keeps floor({num_prunable} / {ratio}) = 0 of the '
        f'{num_prunable} prunable weights. Use ratio <= {num_prunable}.')
  return q


def _raise_traced_ratio(bad, ratio, num_prunable):
  if not np.any(bad):
    return
  ratio = np.asarray(ratio)[np.asarray(bad)] if np.ndim(bad) else ratio
  raise ValueError(
      f'`ratio` reached {ratio} inside a jitted step (e.g. set through '
      'optax.inject_hyperparams or a ratio schedule): GSM needs a compression '
      f'ratio C with 1 <= C <= {num_prunable} (the number of prunable '
      'weights). Check the schedule or the value written into '
      "opt_state.hyperparams['ratio'].")


def floor_divide(n: int, ratio: Any) -> Any:
  """``floor(n / ratio)`` exactly, for a non-negative Python int ``n``.

  A concrete ratio is divided as an exact fraction. A traced float ratio
  ``C = m * 2**e`` (``m`` its integer significand) is divided with integer
  operations only: ``floor(n / m) >> e`` for ``e >= 0``, else long division
  of ``n * 2**-e`` by ``m``, one bit per step, so no intermediate exceeds
  twice ``m``. For ``C >= 1`` the result fits the integer type of the
  ratio's width (int32 for float32; ``n`` must then be below 2**31).

  Args:
    n: the dividend, a Python int.
    ratio: the divisor, concrete or traced.

  Returns:
    A Python int (concrete ratio) or a traced integer scalar. A traced
    ratio below 1 or not finite gives an unspecified value; `num_to_keep`
    reports it.

  Example:
    >>> import jax, numpy as np
    >>> from gsm_optax._src.spec.ratio import floor_divide
    >>> floor_divide(266_200, 60.0), int(jax.jit(
    ...     lambda c: floor_divide(266_200, c))(np.float32(60.0)))
    (4436, 4436)
  """
  if not isinstance(ratio, jax.core.Tracer):
    value = _concrete_value(ratio)
    if math.isinf(value) and value > 0:
      return 0
    return int(fractions.Fraction(n) // fractions.Fraction(value))
  if jnp.issubdtype(ratio.dtype, jnp.integer):
    return jnp.asarray(n, ratio.dtype) // jnp.maximum(ratio, 1)
  fdtype = jnp.dtype(jnp.float64 if ratio.dtype == jnp.float64
                     else jnp.float32)
  idtype = jnp.dtype(jnp.int64 if fdtype == jnp.float64 else jnp.int32)
  if n >= 2**(8 * idtype.itemsize - 1):
    raise ValueError(
        f'{n} prunable weights need 64-bit counts with a traced ratio: '
        'enable jax_enable_x64 and pass a float64 ratio.')
  info = jnp.finfo(fdtype)
  nmant, nbits = info.nmant, 8 * idtype.itemsize
  bits = jax.lax.bitcast_convert_type(ratio.astype(fdtype), idtype)
  exponent = ((bits >> nmant) & (2 * info.maxexp - 1)) - (info.maxexp - 1) - nmant
  mantissa = (bits & ((1 << nmant) - 1)) | (1 << nmant)
  n_arr = jnp.asarray(n, idtype)
  whole, rest = n_arr // mantissa, n_arr % mantissa
  # e >= 0: floor(n / (m 2**e)) = floor(floor(n / m) / 2**e).
  big = jnp.where(exponent >= nbits - 1, 0,
                  whole >> jnp.clip(exponent, 0, nbits - 2))
  # e < 0, s = -e: floor(n 2**s / m) = whole 2**s + floor(rest 2**s / m); the
  # second term by long division, s bits (at most nmant for C >= 1).
  shift = jnp.clip(-exponent, 0, nmant)

  def next_bit(i, carry):
    quotient, remainder = carry
    doubled = remainder * 2
    bit = doubled >= mantissa
    step = i < shift
    return (jnp.where(step, quotient * 2 + bit.astype(idtype), quotient),
            jnp.where(step & bit, doubled - mantissa,
                      jnp.where(step, doubled, remainder)))

  fraction_part, _ = jax.lax.fori_loop(
      0, nmant, next_bit, (jnp.zeros((), idtype), rest))
  small = (whole << shift) + fraction_part
  return jnp.where(exponent >= 0, big, small)
