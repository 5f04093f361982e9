"""What a training run records and persists: the per-epoch history, the result, the callbacks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from robustbench_sparse.sparsity import Sparsifier

__all__ = ["BestEpochs", "Checkpointer", "EpochRecord", "TrainResult"]


@dataclass
class EpochRecord:
    """One row of the training history."""

    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    lr: float
    sparsity: float
    masks_frozen: bool
    seconds: float
    # Adversarial training: loss / accuracy on the training adversarials (train_* are clean).
    train_adv_loss: float | None = None
    train_adv_accuracy: float | None = None
    adv_eps: float | None = None  # the training budget at the epoch's last step (eps warm-up)
    # Held-out validation split (None without one); robust = PGD at the training budget.
    val_accuracy: float | None = None
    val_robust_accuracy: float | None = None


@dataclass
class TrainResult:
    """What :func:`~robustbench_sparse.training.fit` returns: the model (eval mode), its history."""

    model: nn.Module
    history: list[EpochRecord]
    sparsifier: Sparsifier | None
    test_accuracy: float
    test_correct: int
    test_n: int
    best_epoch: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Checkpointer:
    """Callbacks ``fit`` uses to persist state; the training job wires them to :mod:`checkpoint`."""

    save_last: Any = None  # (model, sparsifier, history, train_state) -> None
    save_best: Any = None  # (model, sparsifier, history) -> None
    save_best_robust: Any = None  # (model, sparsifier, history) -> None (adversarial training)
    load_state: Any = None  # () -> dict | None


@dataclass
class BestEpochs:
    """Best validation accuracy (clean and robust) so far and their 1-based epochs (-1: none)."""

    accuracy: float = -1.0
    epoch: int = -1
    robust_accuracy: float = -1.0
    robust_epoch: int = -1

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BestEpochs:
        """The values a training state saved (:meth:`to_state`), defaults where absent."""
        return cls(
            float(state.get("best_accuracy", -1.0)),
            int(state.get("best_epoch", -1)),
            float(state.get("best_robust_accuracy", -1.0)),
            int(state.get("best_robust_epoch", -1)),
        )

    def to_state(self) -> dict[str, Any]:
        """The training-state keys of these values."""
        return {
            "best_accuracy": self.accuracy,
            "best_epoch": self.epoch,
            "best_robust_accuracy": self.robust_accuracy,
            "best_robust_epoch": self.robust_epoch,
        }
