"""`one_shot_prune`: post-training pruning from calibration batches
(magnitude, Wanda, SparseGPT), per layer or with a global allocation, to a
ratio or an N:M pattern."""

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gsm_optax._src import checks
from gsm_optax._src.oneshot import capture
from gsm_optax._src.oneshot import layer
from gsm_optax._src.selection import keys
from gsm_optax._src.selection import search
from gsm_optax._src.spec import pattern as pattern_lib
from gsm_optax._src.spec import prunable as prunable_lib
from gsm_optax._src.spec import ratio as ratio_lib

METHODS = ('magnitude', 'wanda', 'sparsegpt')
ALLOCATIONS = ('uniform', 'global')


def one_shot_prune(forward: Any, params: Any, calibration: Any,
                   ratio: Optional[float] = None,
                   method: str = 'wanda',
                   pattern: Any = None,
                   allocation: str = 'uniform',
                   sequential: bool = True,
                   prunable: prunable_lib.PrunableSpec = None,
                   batch_size: int = 8,
                   blocksize: int = 128,
                   damping: float = 0.01) -> tuple[Any, Any]:
  r"""Prunes a trained model in one shot from a few calibration batches.

  The kernels pruned are the prunable leaves (``prunable``) that a
  ``dot_general`` multiplies by: Dense layers, attention projections,
  einsums. The input each one multiplies is read off the model's jaxpr (the
  walker that `find_groups` uses), so no hook is written per layer. A
  kernel ``(.., in, .., out, ..)`` is pruned as the references' ``(out,
  in)`` matrix, its contracted axes being ``in``.

  Methods, per kernel ``W`` with calibration inputs ``X`` (tokens x in):

  * ``'magnitude'``: ``|W|``; needs no calibration.
  * ``'wanda'`` (Sun et al. 2023): ``|W[i, j]| * ||X[:, j]||``, compared
    within each output row: every row keeps ``floor(in / ratio)`` (the
    reference prunes ``int(in * sparsity)``, the same count at 50% and even
    widths); the lowest are pruned in the order of a stable sort.
  * ``'sparsegpt'`` (Frantar & Alistarh 2023): the reference's
    ``fasterprune`` with ``H = 2 / nsamples * X^T X`` (samples: sequences),
    ``blocksize``, ``damping`` (its ``percdamp``), at sparsity ``1 -
    1 / ratio``: the kept weights are updated to reconstruct ``W X`` (see
    the docs' language-model page for what it computes exactly).

  Allocation (unstructured; an N:M pattern fixes every block's count):

  * ``'uniform'`` (the references'): every kernel at the same sparsity,
    in the method's own comparison group (magnitude: the kernel; Wanda:
    each row; SparseGPT: each block of columns).
  * ``'global'``: each kernel's share comes from one ranking over all
    kernels, taken on the dense model, keeping ``floor(N / ratio)`` in all
    (ties kept): for magnitude of ``|w|`` itself (`prune`'s global
    ranking); for Wanda and SparseGPT of the Wanda score divided by its
    mean over the kernel. The division makes the ranking blind to a
    kernel's scale, which a following norm or softmax makes meaningless,
    so a kernel loses more of its weights only when they are small
    *relative to the rest of it*: the per-layer sparsity that OWL (Yin et
    al. 2024) sets by hand. Each kernel then keeps its share by its
    method's score over the whole kernel (SparseGPT: at that sparsity).

  Order: with ``sequential`` (default, as the references), the kernels are
  pruned group by group in the order the model computes them (a group: the
  kernels that multiply one value, e.g. the query, key and value
  projections), each group's inputs computed by the model with every
  earlier group already pruned (SparseGPT's ``--true-sequential``; Wanda's
  reference prunes a block's kernels on the block's dense inputs, then
  recomputes). Only that group's statistics are held: one Hessian a group.
  Without it, every kernel is pruned on the dense model's inputs in one
  pass (all Hessians at once). Under sharding (params split on their
  output axis, calibration batches on their leading axis) the statistics
  are summed over devices by XLA, one all-reduce a group and batch.

  Args:
    forward: ``forward(params, batch)``, the model on its params (Flax NNX:
      ``lambda p, x: nnx.merge(graphdef, p)(x)``).
    params: the trained params (any pytree of arrays).
    calibration: the calibration samples: one array (or pytree of arrays)
      with a leading axis of samples, e.g. ``(128, seq_len)`` tokens, cut
      into batches of ``batch_size``; or a list of such batches.
    ratio: the compression ratio C (sparsity ``1 - 1 / C``: 2.0 is 50%);
      with a ``pattern``, its ``M / N`` (may be left out).
    method: ``'magnitude'``, ``'wanda'`` or ``'sparsegpt'``.
    pattern: None (unstructured), or an N:M pattern (`NM` or ``'2:4'``)
      along each kernel's contracted axis (the last one, where a kernel
      contracts several); ``M`` must divide it.
    allocation: ``'uniform'`` or ``'global'`` (unstructured only).
    sequential: prune group by group on the pruned model's inputs (True),
      or all on the dense model's (False).
    prunable: which leaves may be pruned (see `keep_top_taylor`); default
      every kernel that a matmul multiplies by (an embedding table, read by
      a gather, stays dense). To keep the output head dense, as the
      papers do, mark it False.
    batch_size: samples per batch when ``calibration`` is one array.
    blocksize: SparseGPT's columns per block (a multiple of M for N:M).
    damping: SparseGPT's dampening, a share of the mean of ``diag(H)``.

  Returns:
    ``(pruned_params, masks)`` as `prune` returns them: masks True where a
    weight is kept (every element of the leaves not pruned).

  Raises:
    ValueError: no kernel to prune; a calibration batch ``forward`` does
      not take; a kernel whose input cannot be read (a convolution or a
      batched matmul, with Wanda or SparseGPT; one inside a loop such as
      ``lax.scan``); N:M blocks that do not divide a kernel's input; a
      singular Hessian (raise ``damping``). Each names the leaf.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from gsm_optax import one_shot_prune
    >>> params = {'w': jax.random.normal(jax.random.key(0), (8, 4))}
    >>> forward = lambda p, x: x @ p['w']
    >>> x = jax.random.normal(jax.random.key(1), (16, 8))
    >>> pruned, masks = one_shot_prune(forward, params, x, pattern='2:4')
    >>> masks['w'].reshape(2, 4, 4).sum(axis=1).tolist()
    [[2, 2, 2, 2], [2, 2, 2, 2]]

  References:
    Sun et al., `A Simple and Effective Pruning Approach for Large Language
    Models <https://arxiv.org/abs/2306.11695>`_, 2023

    Frantar & Alistarh, `SparseGPT: Massive Language Models Can Be
    Accurately Pruned in One-Shot <https://arxiv.org/abs/2301.00774>`_, 2023
  """
  if method not in METHODS:
    raise ValueError(f'`method` must be one of {METHODS}; got {method!r}.')
  if allocation not in ALLOCATIONS:
    raise ValueError(f'`allocation` must be one of {ALLOCATIONS}; got '
                     f'{allocation!r}.')
  pattern = pattern_lib.parse(pattern)
  ratio = pattern_lib.ratio_for(ratio, pattern)
  ratio_lib.validate_ratio(ratio)
  if pattern is not None and allocation != 'uniform':
    raise ValueError(f'`pattern` {pattern} keeps N of every M in each '
                     "kernel: leave `allocation='uniform'`.")
  checks.check_number('batch_size', batch_size, 1, float('inf'), 'e.g. 8')
  checks.check_number('blocksize', blocksize, 1, float('inf'), 'e.g. 128')
  checks.check_number('damping', damping, 0.0, float('inf'), 'e.g. 0.01')
  prunable_lib.check_float_params(params, 'one_shot_prune')
  batches = _batches(calibration, batch_size)
  try:
    traced = capture.Traced(forward, params, batches[0])
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f'one_shot_prune could not run `forward(params, batch)` on the first '
        f'calibration batch (shapes {jax.tree.map(np.shape, batches[0])}): '
        f'{type(e).__name__}: {e}. Pass batches that the model takes (a '
        'leading axis of samples), and `forward(params, batch)`.') from e
  leaves, treedef = jax.tree.flatten(params)
  paths = [jax.tree_util.keystr(p) for p, _ in
           jax.tree_util.tree_flatten_with_path(params)[0]]
  kernels = _kernels(traced, params, prunable, method, paths)
  num_samples = sum(capture.num_samples(b) for b in batches)
  axes = {i: site.kernel_axes for i, site in kernels.items()}
  if pattern is not None:  # blocks along the last contracted axis
    pattern = pattern._replace(axis=jax.tree.unflatten(treedef, [
        axes[i][-1] if i in axes else 0 for i in range(len(leaves))]))
    pattern_lib.leaf_axes(params, pattern, sorted(kernels))
  shares = None
  if allocation == 'global':
    shares = _global_shares(traced, leaves, kernels, batches, num_samples,
                            ratio, method)
  order = _groups(kernels) if sequential else [sorted(kernels)]
  current = list(leaves)
  masks = [jnp.ones(np.shape(x), bool) for x in leaves]
  for group in order:
    stats = {}
    if method != 'magnitude':
      stats = _statistics(traced, current, group, batches, num_samples,
                          'hessian' if method == 'sparsegpt' else 'sq_norms')
    for i in group:
      view = capture.kernel_view(current[i], axes[i])
      pruned, keep = layer.prune_kernel(
          view, stats.get(i), ratio, method, pattern, None if shares is None
          else shares[i], blocksize, damping, paths[i])
      current[i] = capture.from_view(pruned, leaves[i], axes[i])
      masks[i] = capture.from_view(keep, jnp.zeros(np.shape(leaves[i]), bool),
                                   axes[i])
  return jax.tree.unflatten(treedef, current), jax.tree.unflatten(
      treedef, masks)


def _batches(calibration, batch_size):
  if isinstance(calibration, list):
    if not calibration:
      raise ValueError('`calibration` is an empty list: pass the '
                       'calibration batches (e.g. 128 sequences of tokens).')
    return calibration
  leaves = jax.tree.leaves(calibration)
  if not leaves or np.ndim(leaves[0]) == 0:
    raise ValueError('`calibration` must be an array (or pytree of arrays) '
                     'with a leading axis of samples, or a list of batches; '
                     f'got {calibration!r}.')
  n = np.shape(leaves[0])[0]
  return [jax.tree.map(lambda x, s=s: x[s:s + batch_size], calibration)
          for s in range(0, n, batch_size)]


def _kernels(traced, params, prunable, method, paths):
  """Leaf index -> its `Site`, for every kernel to prune (checked)."""
  flags = prunable_lib.resolve_prunable(params, prunable, require_any=False)
  sites = {}
  for site in traced.sites:
    sites.setdefault(site.leaf, site)
  kernels = {}
  for i, flag in enumerate(flags):
    if not flag:
      continue
    site = sites.get(i)
    if site is None:
      if prunable is not None:
        raise ValueError(
            f'{paths[i]} is marked prunable, but no matmul of `forward` '
            'multiplies by it (read by a gather, or inside a loop such as '
            'lax.scan, whose body is not followed): its inputs cannot be '
            'read. Leave it out of `prunable`, or unroll the loop.')
      continue
    uses = [s for s in traced.sites if s.leaf == i]
    if method != 'magnitude' and any(s.unsupported for s in uses):
      why = next(s.unsupported for s in uses if s.unsupported)
      raise ValueError(
          f"{paths[i]} is used in {why}: method={method!r} prunes the kernels "
          "of plain matmuls only. Use method='magnitude', or leave it out "
          'with `prunable`.')
    if any(s.kernel_axes != site.kernel_axes for s in uses):
      raise ValueError(f'{paths[i]} is contracted along different axes by '
                       'two products; leave it out with `prunable`.')
    kernels[i] = site
  if not kernels:
    raise ValueError(
        'one_shot_prune found no kernel to prune: no prunable leaf (see '
        '`prunable`; default: ndim >= 2, not a bias) is multiplied by a '
        'matmul in `forward`. Check that `forward(params, batch)` uses '
        '`params`, and what `prunable` marks.')
  return kernels


def _sources(traced, leaf):
  return sorted({s.source for s in traced.sites if s.leaf == leaf})


def _groups(kernels):
  """The kernels in groups that multiply one value, in model order."""
  by_source = {}
  for i, site in sorted(kernels.items(), key=lambda kv: kv[1].source):
    by_source.setdefault(site.source, []).append(i)
  return list(by_source.values())


def _statistics(traced, current, group, batches, num_samples, kind):
  """Leaf index -> its statistic (summed over the values it multiplies)
  per sample, for the kernels of ``group``, with the params ``current``."""
  wanted = {s: kind for i in group for s in _sources(traced, i)}
  fn = traced.statistics(wanted)
  total = None
  for batch in batches:
    try:
      total = capture.merge(total, fn(current, batch))
    except TypeError as e:
      raise ValueError(
          f'a calibration batch of shapes {jax.tree.map(np.shape, batch)} '
          f'does not fit `forward` as the first batch did: {e}. Give every '
          'batch the same shapes.') from e
  return {i: sum(total[s] for s in _sources(traced, i)) / num_samples
          for i in group}


def _global_shares(traced, leaves, kernels, batches, num_samples, ratio,
                   method):
  """Leaf index -> the weights it keeps under one global ranking."""
  order = sorted(kernels)
  views = [capture.kernel_view(leaves[i], kernels[i].kernel_axes)
           for i in order]
  if method == 'magnitude':
    scores = keys.magnitude_scores(views)
  else:
    stats = _statistics(traced, leaves, order, batches, num_samples,
                        'sq_norms')
    scores = []
    for i, view in zip(order, views):
      t = layer.wanda_scores(view, stats[i])
      scores.append(t / jnp.maximum(jnp.mean(t), jnp.finfo(t.dtype).tiny))
  q = ratio_lib.num_to_keep(sum(int(t.size) for t in scores), ratio)
  top = search.select_top_q(scores, q)
  kept = keys.at_least(scores, top.mask_key)
  return {i: max(int(jnp.sum(k)), 1) for i, k in zip(order, kept)}
