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
