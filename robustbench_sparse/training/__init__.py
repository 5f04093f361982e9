"""Training: dense or sparse, seeded, resumable, with per-epoch history (:func:`fit`).

Modules: :mod:`~robustbench_sparse.training.config` (:class:`TrainConfig` and defaults),
:mod:`~robustbench_sparse.training.optim` (optimizer, LR schedule),
:mod:`~robustbench_sparse.training.data` (validation hold-out, per-epoch loader, DDP layout),
:mod:`~robustbench_sparse.training.evaluation` (clean and robust accuracy),
:mod:`~robustbench_sparse.training.records` (history, result, checkpoint callbacks),
:mod:`~robustbench_sparse.training.epoch` (one training epoch),
:mod:`~robustbench_sparse.training.loop` (:func:`fit` and its named steps).
"""

from __future__ import annotations

from robustbench_sparse.training.config import (
    LRSchedule,
    OptimizerName,
    TrainConfig,
    default_prune_window,
    default_train_config,
    with_overrides,
)
from robustbench_sparse.training.data import ValidationSplit, distributed_layout, validation_split
from robustbench_sparse.training.evaluation import evaluate, evaluate_all, robust_accuracy_all
from robustbench_sparse.training.loop import fit
from robustbench_sparse.training.optim import build_optimizer, lr_factor
from robustbench_sparse.training.records import Checkpointer, EpochRecord, TrainResult

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
