"""training.config: TrainConfig validation and enum parsing, per-dataset defaults, overrides."""

from __future__ import annotations

from typing import Any

import pytest

from robustbench_sparse.errors import UserError
from robustbench_sparse.training.config import (
    LRSchedule,
    OptimizerName,
    TrainConfig,
    default_prune_window,
    default_train_config,
    with_overrides,
)
from robustbench_sparse.training.optim import lr_factor


def test_string_schedule_and_optimizer_are_parsed() -> None:
    cfg = TrainConfig(optimizer="adam", lr_schedule="cosine", warmup_epochs=0.0, epochs=4)  # type: ignore[arg-type]
    assert cfg.optimizer is OptimizerName.ADAM
    assert cfg.lr_schedule is LRSchedule.COSINE
    assert lr_factor(2, 1, cfg) == pytest.approx(0.5)  # cosine, not a silent fall-through
    assert with_overrides(cfg, optimizer="sgd").optimizer is OptimizerName.SGD
    with pytest.raises(UserError, match="valid: sgd, adam, adamw"):
        TrainConfig(optimizer="rmsprop")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"batch_size": 0}, "batch size"),
        ({"lr": 0.0}, "learning rate"),
        ({"lr": float("nan")}, "learning rate"),
        ({"lr": float("inf")}, "learning rate"),
        ({"weight_decay": -1e-4}, "weight decay"),
        ({"label_smoothing": 1.0}, "label smoothing"),
        ({"label_smoothing": -0.1}, "label smoothing"),
        ({"warmup_epochs": -1.0}, "warmup"),
        ({"epochs": 2, "warmup_epochs": 3.0}, "warmup"),
        ({"step_size": 0.0}, "step size"),
        ({"lr_schedule": "linear"}, "valid: constant, cosine, step, multistep"),
    ],
)
def test_train_config_validation(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        TrainConfig(**kwargs)


def test_defaults_and_overrides() -> None:
    assert default_train_config("digits").epochs == 30
    assert default_train_config("mnist").batch_size == 128
    assert default_train_config("unknown-dataset") == TrainConfig()
    assert default_prune_window(30) == (3.0, 15.0)
    assert default_prune_window(5) == (0.5, 2.5)
    cfg = with_overrides(TrainConfig(), epochs=7, lr=None)
    assert cfg.epochs == 7 and cfg.lr == TrainConfig().lr
