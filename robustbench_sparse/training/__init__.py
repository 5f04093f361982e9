"""Training: dense or sparse, seeded, resumable, with per-epoch history (:func:`fit`)."""

from __future__ import annotations

from robustbench_sparse.training.loop import (
    Checkpointer,
    EpochRecord,
    LRSchedule,
    OptimizerName,
    TrainConfig,
    TrainResult,
    ValidationSplit,
    build_optimizer,
    default_prune_window,
    default_train_config,
    distributed_layout,
    evaluate,
    evaluate_all,
    fit,
    lr_factor,
    robust_accuracy_all,
    validation_split,
    with_overrides,
)

__all__ = [
    "Checkpointer",
    "EpochRecord",
    "LRSchedule",
    "OptimizerName",
    "TrainConfig",
    "TrainResult",
    "ValidationSplit",
    "build_optimizer",
    "default_prune_window",
    "default_train_config",
    "distributed_layout",
    "evaluate",
    "evaluate_all",
    "fit",
    "lr_factor",
    "robust_accuracy_all",
    "validation_split",
    "with_overrides",
]
