"""Campfire structured sparsity: granularities, schedule, masks, the sparsifier and its report."""

from __future__ import annotations

from robustbench_sparse.sparsity.config import SparsityConfig
from robustbench_sparse.sparsity.granularity import Granularity
from robustbench_sparse.sparsity.masks import (
    achievable_sparsity,
    combined_counts,
    compute_mask,
    kept_per_group,
)
from robustbench_sparse.sparsity.report import LayerSparsity, SparsityReport, sparsity_report
from robustbench_sparse.sparsity.schedule import cubic_sparsity, epochs_to_steps
from robustbench_sparse.sparsity.selection import select_layers
from robustbench_sparse.sparsity.sparsifier import CampfireSparsifier

__all__ = [
    "CampfireSparsifier",
    "Granularity",
    "LayerSparsity",
    "SparsityConfig",
    "SparsityReport",
    "achievable_sparsity",
    "combined_counts",
    "compute_mask",
    "cubic_sparsity",
    "epochs_to_steps",
    "kept_per_group",
    "select_layers",
    "sparsity_report",
]
