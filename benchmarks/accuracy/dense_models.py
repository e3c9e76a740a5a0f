"""Where a benchmark run takes its dense model from.

Every method of a seed starts from one dense model, trained by the first
GSM run of that seed (or of a learning-rate sweep) and shared through
``config.dense_from``.
"""

import glob
import json
import os


def dense_source(dense_dir, what, first_run, retrain=False, workdir=None):
  """Where a run takes its dense model from: ``dense_dir``. When that is
  missing, raises, unless ``retrain`` (for a run whose shared dense model's
  workdir is gone, its result kept): then '' if the run in ``workdir``
  (resumed) trained its own, else another run of the same seed that has
  one, else '' (train it here, from the same seed)."""
  if has_dense(dense_dir):
    return dense_dir
  if not retrain:
    raise FileNotFoundError(
        f'{what}: no dense model in {dense_dir}; run {first_run} first (or '
        'pass --retrain-missing-dense to train it again).')
  if workdir is not None and trained_dense(workdir):
    return ''  # keep resuming as it started: with its own dense phase
  found = find_dense(dense_dir)
  if found is not None:
    return found
  print(f'{what}: no dense model in {dense_dir}; this run trains it again '
        'from the same seed.', flush=True)
  return ''


def find_dense(dense_dir):
  """``dense_dir`` if it holds a finished dense phase, else another run's of
  the same seed (a sibling workdir) that does, else None."""
  if has_dense(dense_dir):
    return dense_dir
  parent = os.path.dirname(dense_dir)
  others = sorted(d for d in (glob.glob(os.path.join(parent, '*'))
                              if os.path.isdir(parent) else [])
                  if has_dense(d))
  return others[0] if others else None


def has_dense(workdir):
  """Whether ``workdir`` holds a finished dense phase: its model and its
  accuracy (a run that copied one holds the model before the accuracy)."""
  results = os.path.join(workdir, 'phase_results.json')
  if not (os.path.isdir(os.path.join(workdir, 'phase_ends', 'dense')) and
          os.path.exists(results)):
    return False
  with open(results) as f:
    return 'dense' in json.load(f)


def trained_dense(workdir):
  """Whether the run in ``workdir`` trained its dense phase itself (its
  metrics have dense epochs); one started from another's has none."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return False
  with open(path) as f:
    return any(json.loads(l)['phase'] == 'dense' for l in f)
