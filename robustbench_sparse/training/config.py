"""Optimisation settings: :class:`TrainConfig`, its enums and the per-dataset defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from robustbench_sparse.errors import UserError


class OptimizerName(str, Enum):
    """Supported optimizers."""

    SGD = "sgd"
    ADAM = "adam"
    ADAMW = "adamw"


class LRSchedule(str, Enum):
    """Supported learning-rate schedules (all with optional linear warmup)."""

    CONSTANT = "constant"
    COSINE = "cosine"
    STEP = "step"
    MULTISTEP = "multistep"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Epoch-valued fields may be fractional."""

    epochs: int = 30
    batch_size: int = 64
    optimizer: OptimizerName = OptimizerName.SGD
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_schedule: LRSchedule = LRSchedule.COSINE
    warmup_epochs: float = 1.0
    step_size: float = 30.0
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_workers: int = 0
    sync_bn: bool = False  # DDP only: convert BatchNorm to SyncBatchNorm
    scale_lr: bool = False  # DDP only: lr x world_size (linear scaling rule)
    val_fraction: float = 0.1  # held out of the training set for model selection (0 = none)

    def __post_init__(self) -> None:
        # Normalise enum-like strings (direct construction, ``with_overrides``): identity checks
        # on the enums in ``build_optimizer`` / ``lr_factor`` would silently fall through otherwise.
        for name, enum in (("optimizer", OptimizerName), ("lr_schedule", LRSchedule)):
            try:
                object.__setattr__(self, name, enum(getattr(self, name)))
            except ValueError:
                valid = ", ".join(m.value for m in enum)
                raise UserError(
                    f"{name} {getattr(self, name)!r} is unknown; valid: {valid}"
                ) from None
        if self.epochs < 1:
            raise UserError(f"epochs must be >= 1 (got {self.epochs})")
        if self.batch_size < 1:
            raise UserError(f"batch size must be >= 1 (got {self.batch_size})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"learning rate must be a positive number (got {self.lr})")
        if self.weight_decay < 0:
            raise UserError(f"weight decay must be >= 0 (got {self.weight_decay})")
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"label smoothing must be in [0, 1) (got {self.label_smoothing})")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise UserError(
                f"warmup epochs must be in [0, epochs = {self.epochs}] (got {self.warmup_epochs}); "
                "lower --warmup-epochs ([train] warmup_epochs) or raise --epochs"
            )
        if not self.step_size > 0:
            raise UserError(f"step size must be > 0 epochs (got {self.step_size})")
        if not 0 <= self.val_fraction <= 0.5:
            raise UserError(f"validation fraction must be in [0, 0.5] (got {self.val_fraction})")


# Per-dataset defaults, chosen so the default digits run trains a good small CNN in well under 2 min.
_DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"epochs": 30, "batch_size": 64, "lr": 0.05, "warmup_epochs": 1.0},
    "mnist": {"epochs": 12, "batch_size": 128, "lr": 0.05, "warmup_epochs": 1.0},
    "fashion-mnist": {"epochs": 20, "batch_size": 128, "lr": 0.05, "warmup_epochs": 1.0},
    "cifar10": {"epochs": 160, "batch_size": 128, "lr": 0.1, "warmup_epochs": 2.0},
    "cifar100": {"epochs": 160, "batch_size": 128, "lr": 0.1, "warmup_epochs": 2.0},
    "svhn": {"epochs": 40, "batch_size": 128, "lr": 0.05, "warmup_epochs": 1.0},
    "imagefolder": {
        "epochs": 90,
        "batch_size": 256,
        "lr": 0.1,
        "warmup_epochs": 5.0,
        "weight_decay": 1e-4,
    },
}


def default_train_config(dataset: str) -> TrainConfig:
    """The per-dataset default :class:`TrainConfig`."""
    return TrainConfig(**_DATASET_DEFAULTS.get(dataset, {}))


def default_prune_window(epochs: int) -> tuple[float, float]:
    """Default Campfire schedule window in epochs: ramp from 10 % to 50 % of training.

    Campfire fixes the mask part-way through training and fine-tunes with it for the rest.
    """
    return (round(0.1 * epochs, 3), round(0.5 * epochs, 3))


def with_overrides(config: TrainConfig, **overrides: Any) -> TrainConfig:
    """``dataclasses.replace`` ignoring ``None`` values (CLI flags that were not given)."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
