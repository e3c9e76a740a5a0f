"""gsm_optax: Global Sparse Momentum SGD (Ding et al., NeurIPS 2019) for Optax."""

from gsm_optax._src.alias import gsm
from gsm_optax._src.fixed_mask import fixed_mask
from gsm_optax._src.fixed_mask import FixedMaskState
from gsm_optax._src.gradual import cubic_keep_fraction
from gsm_optax._src.gradual import gradual_magnitude_pruning
from gsm_optax._src.gradual import GradualMagnitudeState
from gsm_optax._src.mask import keep_top_taylor
from gsm_optax._src.mask import KeepTopTaylorState
from gsm_optax._src.prunable import default_prunable
from gsm_optax._src.prune import prune
from gsm_optax._src.report import LeafSparsity
from gsm_optax._src.report import sparsity_report
from gsm_optax._src.report import SparsityReport
from gsm_optax._src.select import global_threshold
from gsm_optax._src.select import key_to_score
from gsm_optax._src.select import METHODS as SELECTION_METHODS
from gsm_optax._src.select import score_keys
from gsm_optax._src.select import taylor_scores

__version__ = '0.1.0'

__all__ = (
    'default_prunable',
    'fixed_mask',
    'FixedMaskState',
    'cubic_keep_fraction',
    'gradual_magnitude_pruning',
    'GradualMagnitudeState',
    'global_threshold',
    'gsm',
    'keep_top_taylor',
    'KeepTopTaylorState',
    'key_to_score',
    'LeafSparsity',
    'prune',
    'score_keys',
    'SELECTION_METHODS',
    'sparsity_report',
    'SparsityReport',
    'taylor_scores',
)
