"""The language-model benchmark's methods and sparsities, one record each.

A method is data: its name (in result files and ``--methods``), its label
in the tables, and what it runs. The run loop, the tables and the tests
read `METHODS` and `SPARSITIES`; adding one is adding a record here.
"""

from typing import NamedTuple, Optional


class Sparsity(NamedTuple):
  """A target: unstructured to a ratio, an N:M pattern, or (``structured``)
  whole attention heads, head dims and MLP neurons (`find_groups`) removed
  until the model has ``ratio`` times fewer FLOPs."""
  name: str  # '50%', '2:4', '2x FLOPs', ...
  ratio: Optional[float]
  pattern: Optional[str]
  structured: bool = False


SPARSITIES = {s.name: s for s in (
    Sparsity('50%', 2.0, None),
    Sparsity('70%', 10 / 3, None),
    Sparsity('2:4', None, '2:4'),
    Sparsity('4:8', None, '4:8'),
    Sparsity('1.5x FLOPs', 1.5, None, True),
    Sparsity('2x FLOPs', 2.0, None, True),
)}


class Method(NamedTuple):
  """A one-shot pruner of `gsm_optax.one_shot_prune`.

  Attributes:
    name: its key in result files and ``--methods``.
    label: its name in the tables.
    method: ``one_shot_prune``'s ``method``.
    allocation: ``one_shot_prune``'s ``allocation`` (N:M: uniform).
  """
  name: str
  label: str
  method: str
  allocation: str = 'uniform'


METHODS = {m.name: m for m in (
    Method('magnitude', 'magnitude', 'magnitude'),
    Method('wanda', 'Wanda', 'wanda'),
    Method('sparsegpt', 'SparseGPT', 'sparsegpt'),
    Method('magnitude_global', 'magnitude, global', 'magnitude', 'global'),
    Method('wanda_global', 'Wanda, global', 'wanda', 'global'),
    Method('sparsegpt_global', 'SparseGPT, global', 'sparsegpt', 'global'),
)}


def applies(method, sparsity: Sparsity) -> bool:
  """An N:M pattern fixes every block's count: no global allocation; whole
  groups are pruned by magnitude (their weights' norm per unit of cost,
  globally), from the dense model: no Wanda or SparseGPT there. A method
  with ``only`` runs at those sparsities alone."""
  if getattr(method, 'only', None) and sparsity.name not in method.only:
    return False
  if sparsity.structured:
    start = getattr(method, 'start', method.name)
    return start in ('dense', 'magnitude')
  return (sparsity.pattern is None or
          getattr(method, 'allocation', 'uniform') == 'uniform')


class Training(NamedTuple):
  """A method that trains from the dense model or a one-shot start, for the
  same number of tokens as every other (the config's ``steps``).

  Attributes:
    name: its key in result files and ``--methods``.
    label: its name in the tables.
    start: ``'dense'``, or the `METHODS` name of the one-shot prune it
      starts from.
    rule: ``'fixed'`` (the start's mask kept: fine-tuning), ``'gradual'``
      (gradual magnitude pruning on the cubic schedule over the first 3/4 of
      the steps; of whole groups at a structured target) or ``'gsm'`` (`global_sparse` around AdamW with the
      recipe's smoothed ranking and a passive decay, then the final prune).
    score_decay: with ``'gsm'``, the smoothed ranking's decay.
    passive_steps: with ``'gsm'``, the passive decay a step is this over
      the run's steps (10: a passive weight ends near e^-10 of its size).
    only: the sparsities it runs at (None: every one it applies to).
  """
  name: str
  label: str
  start: str
  rule: str
  score_decay: float = 0.9
  passive_steps: float = 10.0
  only: Optional[tuple] = None


TRAINING = {m.name: m for m in (
    Training('magnitude_ft', 'magnitude + fine-tune', 'magnitude', 'fixed'),
    Training('wanda_ft', 'Wanda + fine-tune', 'wanda', 'fixed'),
    Training('sparsegpt_ft', 'SparseGPT + fine-tune', 'sparsegpt', 'fixed'),
    Training('gradual', 'gradual magnitude', 'dense', 'gradual'),
    Training('gsm', 'GSM', 'dense', 'gsm'),
    # Wanda + fine-tune by construction (tests/test_lm_benchmark.py): run
    # at 50% to show it, not again.
    Training('gsm_from_wanda', 'GSM from Wanda', 'wanda', 'gsm',
             only=('50%',)),
    # Variants of GSM's recipe, tried where GSM ranked last (50%).
    Training('gsm_decay_0.99', 'GSM, score decay 0.99', 'dense', 'gsm',
             score_decay=0.99, only=('50%',)),
    Training('gsm_passive_3', 'GSM, passive decay 3/steps', 'dense', 'gsm',
             passive_steps=3.0, only=('50%',)),
)}


# Every training method's AdamW peak lr is chosen on the validation split
# (seed 0, `run.py --part sweep`) from these, at the sparsity the sweep
# runs for each target: the unstructured targets take 50%'s choice, the N:M
# ones 2:4's, the structured ones 2x's (the dense model was trained at a
# peak of 3e-3). Where the best is at an end of the grid, the sweep goes on
# along `LADDER` until it is not (or the ladder ends).
LEARNING_RATES = (3e-4, 1e-3, 3e-3)
LADDER = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
SWEEP_AT = {'50%': '50%', '70%': '50%', '2:4': '2:4', '4:8': '2:4',
            '1.5x FLOPs': '2x FLOPs', '2x FLOPs': '2x FLOPs'}
