"""The language-model benchmark's methods and sparsities, one record each.

A method is data: its name (in result files and ``--methods``), its label
in the tables, and what it runs. The run loop, the tables and the tests
read `METHODS` and `SPARSITIES`; adding one is adding a record here.
"""

from typing import NamedTuple, Optional


class Sparsity(NamedTuple):
  """A target: unstructured to a ratio, or an N:M pattern."""
  name: str  # '50%', '2:4', ...
  ratio: Optional[float]
  pattern: Optional[str]


SPARSITIES = {s.name: s for s in (
    Sparsity('50%', 2.0, None),
    Sparsity('70%', 10 / 3, None),
    Sparsity('2:4', None, '2:4'),
    Sparsity('4:8', None, '4:8'),
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


def applies(method: Method, sparsity: Sparsity) -> bool:
  """An N:M pattern fixes every block's count: no global allocation."""
  return sparsity.pattern is None or method.allocation == 'uniform'
