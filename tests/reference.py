"""An independent NumPy statement of GSM (official train_one_step + torch SGD)."""

import numpy as np


def kth_largest(values: np.ndarray, q: int) -> float:
  return np.sort(values)[::-1][q - 1]


def gsm_reference_step(params, grads, bufs, *, lr, ratio, momentum,
                       weight_decay, nesterov, prunable):
  """One GSM step on dicts of NumPy arrays; returns (params, bufs, mask, t)."""
  names = sorted(params)
  ranked = [n for n in names if prunable[n]]
  n_total = sum(params[n].size for n in ranked)
  q = int(np.floor(n_total / ratio))
  scores = {n: np.abs(grads[n].astype(np.float32) * params[n]) for n in ranked}
  threshold = kth_largest(np.concatenate([scores[n].ravel() for n in ranked]), q)
  new_params, new_bufs, masks = {}, {}, {}
  for n in names:
    g = grads[n]
    if prunable[n]:
      masks[n] = scores[n] >= threshold
      d_p = np.where(masks[n], g, 0) + weight_decay * params[n]
    else:
      d_p = g
    buf = momentum * bufs[n] + d_p
    step = d_p + momentum * buf if nesterov else buf
    new_params[n] = (params[n] - lr * step).astype(np.float32)
    new_bufs[n] = buf.astype(np.float32)
  return new_params, new_bufs, masks, threshold


# One-shot pruning: NumPy statements of the references (torch layout, W of
# shape (out, in)), written from locuslab/wanda and IST-DASLab/sparsegpt.


def wanda_reference(w, x, sparsity, prune_n=0, prune_m=0):
  """lib/prune.py::prune_wanda for one layer: ``x`` of shape (samples,
  tokens, in), accumulated one sample at a time as WrappedGPT.add_batch."""
  w = np.asarray(w, np.float64)
  scaler, nsamples = np.zeros(w.shape[1]), 0
  for sample in np.asarray(x, np.float64):
    scaler *= nsamples / (nsamples + 1)
    nsamples += 1
    scaler += np.linalg.norm(sample.T, axis=1) ** 2 / nsamples
  metric = np.abs(w) * np.sqrt(scaler)[None, :]
  prune = np.zeros(w.shape, bool)
  if prune_n:
    for i in range(0, w.shape[1], prune_m):
      block = metric[:, i:i + prune_m]
      lowest = np.argsort(block, axis=1, kind='stable')[:, :prune_m - prune_n]
      np.put_along_axis(prune[:, i:i + prune_m], lowest, True, axis=1)
  else:
    order = np.argsort(metric, axis=1, kind='stable')
    np.put_along_axis(prune, order[:, :int(w.shape[1] * sparsity)], True,
                      axis=1)
  return ~prune


def sparsegpt_hessian(x):
  """SparseGPT.add_batch over ``x`` of shape (samples, tokens, in), one
  sample a batch, in float64."""
  h, nsamples = np.zeros((x.shape[-1],) * 2), 0
  for sample in np.asarray(x, np.float64):
    h *= nsamples / (nsamples + 1)
    nsamples += 1
    inp = np.sqrt(2 / nsamples) * sample.T
    h += inp @ inp.T
  return h


def sparsegpt_reference(w, h, sparsity, prunen=0, prunem=0, blocksize=128,
                        percdamp=.01):
  """SparseGPT.fasterprune in float64 (no quantizer); returns W."""
  w = np.array(w, np.float64)
  h = np.array(h, np.float64)
  rows, columns = w.shape
  dead = np.diag(h) == 0
  h[dead, dead] = 1
  w[:, dead] = 0
  damp = percdamp * np.mean(np.diag(h))
  h[np.arange(columns), np.arange(columns)] += damp
  hinv = np.linalg.inv(h)
  hinv = np.linalg.cholesky(hinv).T  # torch.linalg.cholesky(upper=True)
  for i1 in range(0, columns, blocksize):
    i2 = min(i1 + blocksize, columns)
    count = i2 - i1
    w1 = w[:, i1:i2].copy()
    q1 = np.zeros_like(w1)
    err1 = np.zeros_like(w1)
    hinv1 = hinv[i1:i2, i1:i2]
    if prunen == 0:
      tmp = w1 ** 2 / np.diag(hinv1).reshape((1, -1)) ** 2
      thresh = np.sort(tmp.flatten())[int(tmp.size * sparsity)]
      mask1 = tmp <= thresh
    else:
      mask1 = np.zeros_like(w1, bool)
    for i in range(count):
      col = w1[:, i]
      d = hinv1[i, i]
      if prunen != 0 and i % prunem == 0:
        tmp = (w1[:, i:i + prunem] ** 2 /
               np.diag(hinv1)[i:i + prunem].reshape((1, -1)) ** 2)
        lowest = np.argsort(tmp, axis=1, kind='stable')[:, :prunem - prunen]
        np.put_along_axis(mask1[:, i:i + prunem], lowest, True, axis=1)
      q = col.copy()
      q[mask1[:, i]] = 0
      q1[:, i] = q
      err = (col - q) / d
      w1[:, i:] -= np.outer(err, hinv1[i, i:])
      err1[:, i] = err
    w[:, i1:i2] = q1
    w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
  return w
