"""Final global magnitude prune: keep the Q largest |w|, zero the rest."""

import functools
from typing import Any, Optional
import warnings

import jax
import jax.numpy as jnp

from gsm_optax._src.spec import official
from gsm_optax._src.spec import pattern as pattern_lib
from gsm_optax._src.spec import prunable as prunable_lib
from gsm_optax._src.spec import ratio as ratio_lib
from gsm_optax._src.spec import structure as structure_lib

COUNTS = ('floor', 'official')


def prune(params: Any, ratio: Optional[float] = None,
          prunable: prunable_lib.PrunableSpec = None,
          method: str = 'auto',
          count: str = 'floor',
          groups: Optional[Any] = None,
          budget: str = 'params',
          group_norm: str = 'l2',
          pattern: Any = None) -> tuple[Any, Any]:
  """Keeps the ``floor(N / ratio)`` largest-magnitude prunable weights.

  The ranking is global over all prunable leaves (ties kept), as in the
  official ``gsm_prune_pipeline.py``; non-prunable leaves are untouched.
  After GSM training the passive weights are already near zero, so this
  prune needs no fine-tuning.

  Differences from the official code: by default Q = ``floor(N / C)``, the
  count the training step keeps active. The official final prune keeps
  ``N - int(N * (1 - 1/C))`` weights (``count='official'``), which is
  ``ceil(N / C)``, one more, when C does not divide N. The official code
  also ranks only 2-D and 4-D tensors: pass
  ``prunable=gsm_optax.official_prunable`` for that.

  Ties at the threshold are kept. When they keep more non-zero weights than
  Q (say, many weights of equal magnitude), the ratio is not reached and a
  `UserWarning` says so; break the ties (e.g. with tiny noise) if exactly Q
  matters.

  Args:
    params: a pytree of arrays.
    ratio: the global compression ratio C >= 1.
    prunable: which leaves are ranked (see `keep_top_taylor`).
    method: selection route (see `global_threshold`; the same result).
    count: ``'floor'`` (default) keeps ``floor(N / ratio)`` weights;
      ``'official'`` keeps the official final prune's
      ``N - int(N * (1 - 1/ratio))``.
    groups: None (single weights), or a `Groups` (structured GSM): whole
      groups are kept, ranked by their ``group_norm`` per unit of cost,
      until ``budget`` reaches ``1 / ratio`` of the model's (see
      `Groups.select`); every element of the others is zeroed, biases and
      norm entries too, ready for `slim`.
    budget: with ``groups``: ``'params'``, ``'flops'`` or ``'latency'``
      (groups with a measured table, `Groups.with_latency`).
    group_norm: with ``groups``: what "largest" means for a group,
      ``'l2'`` (the sum of its squared weights) or ``'l1'`` (the sum of
      their absolute values, the filter norm of Li et al. 2017).
    pattern: None, or an N:M pattern (`NM` or ``'2:4'``): every block of
      M consecutive weights along a kernel's input axis keeps its N largest
      (of equal ones, the later); ``ratio`` is then ``M / N`` and may be
      left out.

  Raises:
    ValueError: if a prunable weight is NaN or infinite (training diverged;
      a NaN magnitude would rank first and be kept). Checked when the
      weights are concrete, not under `jax.jit`.

  Returns:
    ``(pruned_params, masks)``: masks is a pytree of bool arrays like
    ``params``, True where a weight is kept (all True on non-prunable leaves).

  Example:
    >>> import jax.numpy as jnp
    >>> from gsm_optax import prune
    >>> pruned, masks = prune({'w': jnp.array([[1., -4.], [3., 2.]])}, ratio=2)
    >>> pruned['w'].tolist()
    [[0.0, -4.0], [3.0, 0.0]]
  """
  if count not in COUNTS:
    raise ValueError(f'`count` must be one of {COUNTS}; got {count!r}.')
  if count == 'official' and (groups is not None or pattern is not None):
    raise ValueError("`count='official'` is the official code's count of "
                     'single weights; with `groups` the budget decides, with '
                     'a `pattern` its N of every M.')
  ratio = pattern_lib.ratio_for(ratio, pattern)
  structure = structure_lib.resolve(groups, prunable, method, budget,
                                    norm=group_norm, pattern=pattern)
  if pattern is not None:
    structure.check(params, ratio)
  leaves, treedef = jax.tree.flatten(params)
  chosen = structure.scored_leaves(params)
  _check_float(params, chosen)
  _check_finite([leaves[i] for i in chosen])
  q = None
  if count == 'official':
    n = sum(leaves[i].size for i in chosen)
    q = official.official_num_to_keep(n, ratio)
  pruned, masks, threshold, nonzero = compiled(
      _prune, params, ratio, prunable, method, groups, budget, q, group_norm,
      pattern)
  if groups is None and pattern is None:
    n = sum(leaves[i].size for i in chosen)
    _warn_if_ties_defeat_ratio([nonzero[i] for i in chosen],
                               q or ratio_lib.num_to_keep(n, ratio), n,
                               threshold)
    _warn_if_a_layer_is_emptied(params, chosen, nonzero, ratio)
  return jax.tree.unflatten(treedef, pruned), jax.tree.unflatten(treedef, masks)


def _prune(params, ratio, prunable, method, groups, budget, q, group_norm,
           pattern):
  """The magnitude prune's leaves, masks, threshold and each leaf's count
  of non-zero weights after it (for the warnings: counted here, in the
  one compiled program, rather than one dispatch a leaf after it)."""
  structure = structure_lib.resolve(groups, prunable, method, budget,
                                    norm=group_norm, pattern=pattern)
  leaves = jax.tree.leaves(params)
  top = structure.choose({}, params, ratio, 'magnitude', q=q)
  masks = [top.masks.get(i, jnp.ones(jnp.shape(x), bool))
           for i, x in enumerate(leaves)]
  pruned = [jnp.where(m, x, jnp.zeros((), x.dtype))
            for m, x in zip(masks, leaves)]
  nonzero = [jnp.count_nonzero(x) for x in pruned]
  return pruned, masks, top.threshold, nonzero


def compiled(fn, params, *static):
  """``fn(params, *static)``, jitted with ``static`` as static arguments
  when they hash and ``params`` are concrete (a prune runs once per leaf
  op otherwise: minutes for DenseNet-40's 120 leaves), else as it is."""
  try:
    hash(static)
  except TypeError:
    return fn(params, *static)
  if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(params)):
    return fn(params, *static)
  return _jit(fn)(params, *static)


@functools.cache
def _jit(fn):
  return jax.jit(fn, static_argnums=tuple(range(1, fn.__code__.co_argcount)))


def _warn_if_ties_defeat_ratio(nonzero, q, n, threshold):
  """``nonzero``: the kept count of each ranked leaf."""
  if any(isinstance(x, jax.core.Tracer) for x in nonzero + [threshold]):
    return
  nonzero = sum(int(x) for x in nonzero)
  if nonzero > q:
    threshold = float(threshold)
    warnings.warn(
        f'prune kept {nonzero:,} non-zero weights, not Q = {q:,}: '
        f'{nonzero - q:,} more tie at the threshold |w| = {threshold:g}, and '
        f'ties are kept. The achieved ratio is {n / nonzero:.2f}x. Break the '
        'ties (e.g. add tiny noise to the weights) if exactly Q matters.',
        stacklevel=3)


def _warn_if_a_layer_is_emptied(params, chosen, nonzero, ratio):
  """Global pruning can take every weight of a layer: the model then
  ignores what flows through it. Say which, and what to do. ``nonzero``:
  each leaf's count of non-zero weights after the prune."""
  if any(isinstance(nonzero[i], jax.core.Tracer) for i in chosen):
    return
  with_paths = jax.tree_util.tree_flatten_with_path(params)[0]
  emptied = [jax.tree_util.keystr(with_paths[i][0]) for i in chosen
             if with_paths[i][1].size and not int(nonzero[i])]
  if emptied:
    warnings.warn(
        f'prune at ratio {ratio:g} kept no weight of {", ".join(emptied)}: '
        'the model no longer uses what flows through it (a layer collapse, '
        'which a global ranking can reach at high ratios). Lower the ratio, '
        'keep the layer dense (`prunable`), or train longer with GSM so that '
        'its weights earn their place.', stacklevel=3)


def _check_float(params, chosen):
  """The ranked leaves are floats: one rule with `gsm`'s."""
  with_paths = jax.tree_util.tree_flatten_with_path(params)[0]
  for i in chosen:
    path, leaf = with_paths[i]
    dtype = getattr(leaf, 'dtype', None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
      raise ValueError(
          f'prune ranks floating-point weights only; '
          f'{jax.tree_util.keystr(path)} has dtype {dtype} and is marked '
          'prunable. Leave it out with `prunable` (integer state such as a '
          'step counter is not a weight), or cast it to a float dtype.')


def _check_finite(leaves):
  if any(isinstance(x, jax.core.Tracer) for x in leaves):
    return
  bad = int(_count_not_finite(leaves))
  if bad:
    raise ValueError(
        f'`params` has {bad} NaN or infinite prunable weights, so there is '
        'no magnitude ranking to prune by: training diverged. Lower the '
        'learning rate, or wrap the optimizer in optax.apply_if_finite to '
        'skip non-finite steps.')


@jax.jit
def _count_not_finite(leaves):
  return sum(jnp.sum(~jnp.isfinite(x)) for x in leaves)
