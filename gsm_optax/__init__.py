"""gsm_optax: Global Sparse Momentum SGD (Ding et al., NeurIPS 2019) for Optax."""

from gsm_optax._src.alias import gsm
from gsm_optax._src.deploy.latency import measure_latency
from gsm_optax._src.deploy.slim import export_slim
from gsm_optax._src.deploy.slim import slim
from gsm_optax._src.deploy.slim import SlimInfo
from gsm_optax._src.deploy.slim import SlimSlowerWarning
from gsm_optax._src.deploy.sparse import matmul_kernels
from gsm_optax._src.deploy.sparse import SparseKernel
from gsm_optax._src.deploy.sparse import to_dense
from gsm_optax._src.deploy.sparse import to_sparse
from gsm_optax._src.deploy.sparse_apply import sparse_apply
from gsm_optax._src.deploy.sparse_apply import sparse_forward
from gsm_optax._src.deploy.sparse_io import load_sparse
from gsm_optax._src.deploy.sparse_io import save_sparse
from gsm_optax._src.groups.groups import find_groups
from gsm_optax._src.groups.groups import Groups
from gsm_optax._src.groups.latency import LatencyEntry
from gsm_optax._src.groups.latency import LatencyTable
from gsm_optax._src.oneshot.one_shot import one_shot_prune
from gsm_optax._src.prune import prune
from gsm_optax._src.prune_check import check_final_prune
from gsm_optax._src.prune_check import PruneCheck
from gsm_optax._src.prune_check import PruneCostWarning
from gsm_optax._src.prune_check import pruned_norm_share
from gsm_optax._src.report import LeafSparsity
from gsm_optax._src.report import sparsity_report
from gsm_optax._src.report import SparsityReport
from gsm_optax._src.report import structure_report
from gsm_optax._src.report import StructureReport
from gsm_optax._src.selection.keys import key_to_score
from gsm_optax._src.selection.keys import score_keys
from gsm_optax._src.selection.keys import taylor_scores
from gsm_optax._src.selection.search import global_threshold
from gsm_optax._src.selection.search import METHODS as SELECTION_METHODS
from gsm_optax._src.spec.official import official_num_to_keep
from gsm_optax._src.spec.official import official_prunable
from gsm_optax._src.spec.official import official_weight_decay_mask
from gsm_optax._src.spec.pattern import NM
from gsm_optax._src.spec.prunable import default_prunable
from gsm_optax._src.spec.ratio import num_to_keep
from gsm_optax._src.transforms.fixed_mask import fixed_mask
from gsm_optax._src.transforms.fixed_mask import FixedMaskState
from gsm_optax._src.transforms.global_sparse import global_sparse
from gsm_optax._src.transforms.global_sparse import GlobalSparseState
from gsm_optax._src.transforms.gradual import cubic_keep_fraction
from gsm_optax._src.transforms.gradual import gradual_magnitude_pruning
from gsm_optax._src.transforms.gradual import GradualMagnitudeState
from gsm_optax._src.transforms.mask import find_mask_state
from gsm_optax._src.transforms.mask import keep_top_taylor
from gsm_optax._src.transforms.mask import KeepTopTaylorState

__version__ = '0.1.0'

__all__ = (
    'default_prunable',
    'find_mask_state',
    'export_slim',
    'find_groups',
    'fixed_mask',
    'FixedMaskState',
    'check_final_prune',
    'cubic_keep_fraction',
    'gradual_magnitude_pruning',
    'GradualMagnitudeState',
    'global_sparse',
    'GlobalSparseState',
    'global_threshold',
    'Groups',
    'gsm',
    'keep_top_taylor',
    'KeepTopTaylorState',
    'key_to_score',
    'LatencyEntry',
    'LatencyTable',
    'LeafSparsity',
    'load_sparse',
    'matmul_kernels',
    'measure_latency',
    'NM',
    'num_to_keep',
    'official_num_to_keep',
    'official_prunable',
    'official_weight_decay_mask',
    'one_shot_prune',
    'prune',
    'PruneCheck',
    'PruneCostWarning',
    'pruned_norm_share',
    'save_sparse',
    'score_keys',
    'slim',
    'SlimInfo',
    'SlimSlowerWarning',
    'SELECTION_METHODS',
    'sparsity_report',
    'sparse_apply',
    'sparse_forward',
    'SparseKernel',
    'SparsityReport',
    'structure_report',
    'StructureReport',
    'taylor_scores',
    'to_dense',
    'to_sparse',
)
