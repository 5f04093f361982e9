"""Campfire structured sparsity and the other pruning methods: schedule, masks, sparsifiers."""

from __future__ import annotations

from robustbench_sparse.sparsity.base import LossFn, PrunedLayer, Sparsifier, TrainingContext
from robustbench_sparse.sparsity.config import (
    FilterNorm,
    LayerDistribution,
    PruningMethod,
    SparsityConfig,
)
from robustbench_sparse.sparsity.granularity import Granularity
from robustbench_sparse.sparsity.masks import (
    achievable_sparsity,
    combined_counts,
    compute_mask,
    kept_per_group,
)
from robustbench_sparse.sparsity.methods import (
    calibration_batches,
    create_sparsifier,
)
from robustbench_sparse.sparsity.report import LayerSparsity, SparsityReport, sparsity_report
from robustbench_sparse.sparsity.schedule import cubic_sparsity, epochs_to_steps
from robustbench_sparse.sparsity.selection import select_layers
from robustbench_sparse.sparsity.sparsifier import CampfireSparsifier, GradualSparsifier

__all__ = [
    "CampfireSparsifier",
    "FilterNorm",
    "GradualSparsifier",
    "Granularity",
    "LayerDistribution",
    "LayerSparsity",
    "LossFn",
    "PrunedLayer",
    "PruningMethod",
    "Sparsifier",
    "SparsityConfig",
    "SparsityReport",
    "TrainingContext",
    "achievable_sparsity",
    "calibration_batches",
    "combined_counts",
    "compute_mask",
    "create_sparsifier",
    "cubic_sparsity",
    "epochs_to_steps",
    "kept_per_group",
    "select_layers",
    "sparsity_report",
]
