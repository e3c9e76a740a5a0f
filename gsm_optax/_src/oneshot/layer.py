"""One kernel pruned from its calibration statistics: magnitude, Wanda,
SparseGPT.

Every function here takes the kernel in the references' layout, ``W`` of
shape ``(out, in)`` (rows are outputs, columns the contracted inputs), and
returns the pruned ``W`` and its keep-mask. `one_shot` moves a kernel of
any layout to that view and back.
"""

import functools

import jax
import jax.numpy as jnp

from gsm_optax._src.selection import keys
from gsm_optax._src.selection import search
from gsm_optax._src.spec import pattern as pattern_lib
from gsm_optax._src.spec import ratio as ratio_lib


def keep_top(scores: jax.Array, q, method: str = 'auto') -> jax.Array:
  """True at the ``q`` largest ``scores`` of the whole array, ties kept."""
  top = search.select_top_q([scores], q, method)
  return keys.at_least([scores], top.mask_key)[0]


def keep_per_row(scores: jax.Array, q: int) -> jax.Array:
  """True at the ``q`` largest scores of every row; the rest are pruned in
  the order of a stable ascending sort (of equal scores, the lower column
  first), as Wanda's reference prunes."""
  order = jnp.argsort(keys.score_keys([scores])[0], axis=1, stable=True)
  rank = jnp.argsort(order, axis=1)  # position in the ascending order
  return rank >= scores.shape[1] - q


def wanda_scores(w: jax.Array, sq_norms: jax.Array) -> jax.Array:
  """Wanda's score ``|W[i, j]| * ||X_j||`` (Sun et al. 2023), from the sum
  of each input's squares over the calibration tokens (divided by the
  samples, as the reference; the scale changes no ranking in a row)."""
  return jnp.abs(w.astype(jnp.float32)) * jnp.sqrt(sq_norms)[None, :]


def sparsegpt(w: jax.Array, hessian: jax.Array, sparsity: float,
              pattern: pattern_lib.NM | None, blocksize: int, damping: float,
              method: str = 'auto') -> tuple[jax.Array, jax.Array, jax.Array]:
  """SparseGPT's ``fasterprune`` (Frantar & Alistarh 2023), as the
  reference IST-DASLab/sparsegpt computes it.

  ``hessian`` is ``H = 2 / nsamples * sum X^T X``. A dead input (``H[d, d]
  == 0``) gets ``H[d, d] = 1`` and its column of ``W`` zeroed, then
  ``damping * mean(diag H)`` is added to the diagonal; ``Hinv`` is the
  upper Cholesky factor of ``H^-1``. Columns are taken in blocks of
  ``blocksize``: unstructured, a block prunes every weight whose
  ``w**2 / Hinv[j, j]**2`` is at most the ``int(numel * sparsity)``-th
  smallest of the block (so ``int(numel * sparsity) + 1`` and ties, rows
  unequal); N:M, each group of M columns (counted from the block's start)
  keeps, row by row, its N best on the weights as updated so far. Each
  pruned column's error is spread over the block's later columns, and the
  block's over the later blocks.

  Returns:
    The pruned ``W`` (float32), its keep-mask, and whether ``Hinv`` is
    finite (False: the dampened Hessian is singular).
  """
  w = w.astype(jnp.float32)
  h = hessian.astype(jnp.float32)
  rows, cols = w.shape
  diag = jnp.diagonal(h)
  dead = diag == 0
  h = h + jnp.diag(jnp.where(dead, 1.0, 0.0))
  w = jnp.where(dead[None, :], 0.0, w)
  damp = damping * jnp.mean(jnp.diagonal(h))
  h = h + damp * jnp.eye(cols, dtype=h.dtype)
  lower = jnp.linalg.cholesky(h)
  h_inv = jax.scipy.linalg.cho_solve((lower, True), jnp.eye(cols, dtype=h.dtype))
  hinv = jnp.linalg.cholesky(h_inv).T  # upper: H^-1 = U^T U
  finite = jnp.all(jnp.isfinite(hinv))
  kept = []
  for i1 in range(0, cols, blocksize):
    i2 = min(i1 + blocksize, cols)
    count = i2 - i1
    w1 = w[:, i1:i2]
    hinv1 = hinv[i1:i2, i1:i2]
    d1 = jnp.diagonal(hinv1)
    if pattern is None:
      tmp = w1 ** 2 / d1[None, :] ** 2
      q = tmp.size - int(tmp.size * sparsity)  # keep above the k-th smallest
      top = search.select_top_q([tmp], q, method)
      prune1 = keys.score_keys([tmp])[0] <= top.threshold_key
    else:
      prune1 = jnp.zeros(w1.shape, bool)

    def column(i, carry, hinv1=hinv1, d1=d1):
      w1, q1, err1, prune1 = carry
      if pattern is not None:
        m = pattern.m
        start = (i // m) * m
        tmp = (jax.lax.dynamic_slice(w1, (0, start), (rows, m)) ** 2 /
               jax.lax.dynamic_slice(d1, (start,), (m,))[None, :] ** 2)
        chosen = ~pattern_lib.keep_in_blocks(tmp, pattern.n, m, 1)
        prune1 = jnp.where(i % m == 0, jax.lax.dynamic_update_slice(
            prune1, chosen, (0, start)), prune1)
      col = jax.lax.dynamic_slice(w1, (0, i), (rows, 1))[:, 0]
      pruned = jax.lax.dynamic_slice(prune1, (0, i), (rows, 1))[:, 0]
      q = jnp.where(pruned, 0.0, col)
      err = (col - q) / hinv1[i, i]
      # Hinv1 is upper triangular: the columns before i are left unchanged.
      w1 = w1 - err[:, None] * hinv1[i][None, :]
      q1 = jax.lax.dynamic_update_slice(q1, q[:, None], (0, i))
      err1 = jax.lax.dynamic_update_slice(err1, err[:, None], (0, i))
      return w1, q1, err1, prune1

    if pattern is not None and count % pattern.m:
      raise ValueError(
          f'a block of {count} columns breaks the {pattern} groups: '
          f'`blocksize` and the input width must be multiples of {pattern.m}.')
    _, q1, err1, prune1 = jax.lax.fori_loop(
        0, count, column, (w1, jnp.zeros_like(w1), jnp.zeros_like(w1),
                           prune1))
    w = w.at[:, i1:i2].set(q1)
    if i2 < cols:
      w = w.at[:, i2:].add(-(err1 @ hinv[i1:i2, i2:]))
    kept.append(~prune1)
  return w, jnp.concatenate(kept, axis=1), finite


def prune_kernel(view, stat, ratio, method, pattern, share, blocksize,
                  damping, path):
  """One kernel as ``(out, in)`` by ``method``, to ``ratio`` (or to
  ``share`` weights, the global allocation's, or to ``pattern``): the
  pruned view and its keep-mask."""
  cols = view.shape[1]
  if pattern is not None:  # hashable: the axis is the view's columns
    pattern = pattern_lib.NM(pattern.n, pattern.m)
  if method == 'sparsegpt':
    sparsity = 1.0 - (1.0 / ratio if share is None else share / view.size)
    pruned, keep, finite = jit_sparsegpt(view, stat, sparsity, pattern,
                                      min(blocksize, cols), damping)
    if not bool(finite):
      raise ValueError(
          f'{path}: the dampened Hessian of its inputs is singular (its '
          f'Cholesky factor is not finite) with `damping`={damping}. Raise '
          '`damping` (e.g. 0.1), or give more calibration samples.')
    return pruned, keep
  scores = (keys.magnitude_scores([view])[0] if method == 'magnitude'
            else wanda_scores(view, stat))
  keep = select(scores, ratio, method, pattern, share)
  return jnp.where(keep, view, jnp.zeros((), view.dtype)), keep


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def select(scores, ratio, method, pattern, share):
  if pattern is not None:
    return pattern_lib.keep_in_blocks(scores, pattern.n, pattern.m, 1)
  if share is not None:
    return keep_top(scores, share)
  if method == 'wanda':  # each row is a comparison group
    return keep_per_row(scores, ratio_lib.num_to_keep(
        scores.shape[1], ratio))
  return keep_top(scores, ratio_lib.num_to_keep(scores.size, ratio))


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def jit_sparsegpt(view, hessian, sparsity, pattern, blocksize, damping):
  return sparsegpt(view, 2.0 * hessian, sparsity, pattern, blocksize,
                         damping)
