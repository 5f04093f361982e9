"""Training loop: dense or Campfire-sparse, seeded, resumable, with per-epoch history.

``fit`` owns the optimisation only; the sparsity logic lives in :class:`CampfireSparsifier` and the
file format in :mod:`robustbench_sparse.checkpoint`.

Determinism: the data order and augmentation of epoch ``e`` depend only on ``(seed, e)`` (the global
RNG is re-seeded at every epoch start), so a run resumed after epoch ``e`` sees exactly the batches an
uninterrupted run sees, and on CPU reproduces its weights and masks bit for bit.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from robustbench_sparse.datasets import DatasetSplits
from robustbench_sparse.devices import resolve_device
from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity import CampfireSparsifier, SparsityConfig

logger = logging.getLogger(__name__)


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
            raise UserError(f"warmup epochs must be in [0, epochs] (got {self.warmup_epochs})")
        if not self.step_size > 0:
            raise UserError(f"step size must be > 0 epochs (got {self.step_size})")


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


@dataclass
class TrainResult:
    """What :func:`fit` returns: the trained model (train mode off) and its history."""

    model: nn.Module
    history: list[EpochRecord]
    sparsifier: CampfireSparsifier | None
    test_accuracy: float
    test_correct: int
    test_n: int
    best_epoch: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


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


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Optimizer over all trainable parameters (no weight decay on BatchNorm and biases)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer is OptimizerName.SGD:
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov
        )
    if config.optimizer is OptimizerName.ADAM:
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.AdamW(groups, lr=config.lr)


def lr_factor(step: int, steps_per_epoch: int, config: TrainConfig) -> float:
    """Multiplier of the base LR at optimizer step ``step`` (pure; used by LambdaLR)."""
    epoch = step / steps_per_epoch
    total = float(config.epochs)
    if config.warmup_epochs > 0 and epoch < config.warmup_epochs:
        return min(1.0, (step + 1) / (config.warmup_epochs * steps_per_epoch))
    if config.lr_schedule is LRSchedule.CONSTANT:
        return 1.0
    if config.lr_schedule is LRSchedule.COSINE:
        span = max(total - config.warmup_epochs, 1e-12)
        progress = min(max((epoch - config.warmup_epochs) / span, 0.0), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if config.lr_schedule is LRSchedule.STEP:
        return float(config.gamma ** math.floor(epoch / config.step_size))
    passed = sum(1 for m in config.milestones if epoch >= m)
    return float(config.gamma**passed)


def _loader(dataset: Dataset[Any], config: TrainConfig, *, shuffle: bool, seed: int) -> DataLoader:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=shuffle,
        drop_last=False,
        num_workers=config.num_workers,
        generator=generator,
    )


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: Dataset[Any], *, device: torch.device, batch_size: int = 256
) -> tuple[float, int, int]:
    """Mean cross-entropy loss, number correct and number of examples on ``dataset`` (eval mode)."""
    was_training = model.training
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        n += int(y.numel())
    model.train(was_training)
    return loss_sum / max(n, 1), correct, n


@dataclass
class Checkpointer:
    """Callbacks ``fit`` uses to persist state; the CLI wires them to :mod:`checkpoint`."""

    save_last: Any = None  # (model, sparsifier, history, train_state) -> None
    save_best: Any = None  # (model, sparsifier, history) -> None
    load_state: Any = None  # () -> dict | None


def fit(
    model: nn.Module,
    data: DatasetSplits,
    config: TrainConfig,
    sparsity: SparsityConfig | None = None,
    *,
    checkpointer: Checkpointer | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` on ``data.train``; prune with Campfire when ``sparsity.target > 0``.

    The sparsifier is stepped after every optimizer step (mask update when due, mask re-applied,
    optimizer state zeroed at pruned positions). With ``resume`` the state returned by
    ``checkpointer.load_state()`` (model, optimizer, LR schedule, sparsifier, history) is restored
    and training continues at the next epoch.
    """
    device = resolve_device(config.device)
    use_amp = config.amp and device.type == "cuda"
    torch.manual_seed(config.seed)
    model.to(device)
    train_loader_len = math.ceil(len(data.train) / config.batch_size)  # type: ignore[arg-type]
    steps_per_epoch = max(train_loader_len, 1)

    sparsifier: CampfireSparsifier | None = None
    if sparsity is not None and sparsity.target > 0:
        sparsifier = CampfireSparsifier(sparsity, steps_per_epoch)
        sparsifier.prepare(model)

    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps_per_epoch, config)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    history: list[EpochRecord] = []
    start_epoch = 0
    best_acc, best_epoch = -1.0, -1
    if resume and checkpointer is not None and checkpointer.load_state is not None:
        state = checkpointer.load_state()
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if sparsifier is not None and state.get("sparsifier") is not None:
                sparsifier.load_state_dict(state["sparsifier"])
            history = [EpochRecord(**h) for h in state["history"]]
            start_epoch = len(history)
            best_acc = float(state.get("best_accuracy", -1.0))
            best_epoch = int(state.get("best_epoch", -1))
            logger.info("resuming after epoch %d", start_epoch)

    t_start = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        t_epoch = time.perf_counter()
        # Data order and augmentation of this epoch depend on (seed, epoch) only: resumable.
        torch.manual_seed(config.seed * 100_003 + epoch)
        loader = _loader(data.train, config, shuffle=True, seed=config.seed * 100_003 + epoch)
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            leave=False,
            disable=not progress,
            unit="batch",
        )
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, enabled=use_amp):
                logits = model(x)
                loss = criterion(logits, y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if sparsifier is not None:
                sparsifier.step(optimizer)
            batch = int(y.numel())
            loss_sum += float(loss.detach()) * batch
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += batch
            bar.set_postfix(
                loss=f"{loss_sum / seen:.3f}",
                acc=f"{correct / seen:.3f}",
                sparsity=f"{sparsifier.current_sparsity:.2f}" if sparsifier else "0",
            )
        if not math.isfinite(loss_sum):
            raise UserError(
                f"training diverged at epoch {epoch + 1} (loss is not finite); lower --lr"
            )
        test_loss, test_correct, test_n = evaluate(model, data.test, device=device)
        record = EpochRecord(
            epoch=epoch + 1,
            train_loss=loss_sum / max(seen, 1),
            train_accuracy=correct / max(seen, 1),
            test_loss=test_loss,
            test_accuracy=test_correct / max(test_n, 1),
            lr=float(optimizer.param_groups[0]["lr"]),
            sparsity=sparsifier.current_sparsity if sparsifier else 0.0,
            masks_frozen=sparsifier.frozen if sparsifier else True,
            seconds=time.perf_counter() - t_epoch,
        )
        history.append(record)
        logger.info(
            "epoch %d/%d loss %.4f train acc %.4f test acc %.4f sparsity %.3f (%.1fs)",
            record.epoch,
            config.epochs,
            record.train_loss,
            record.train_accuracy,
            record.test_accuracy,
            record.sparsity,
            record.seconds,
        )
        # "Best" only counts epochs whose masks are final: an earlier, denser model is not a
        # Campfire model at the target sparsity.
        if record.masks_frozen and record.test_accuracy > best_acc:
            best_acc, best_epoch = record.test_accuracy, record.epoch
            if checkpointer is not None and checkpointer.save_best is not None:
                checkpointer.save_best(model, sparsifier, history)
        if checkpointer is not None and checkpointer.save_last is not None:
            train_state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "sparsifier": sparsifier.state_dict() if sparsifier else None,
                "history": [vars(h) for h in history],
                "best_accuracy": best_acc,
                "best_epoch": best_epoch,
            }
            checkpointer.save_last(model, sparsifier, history, train_state)

    if sparsifier is not None and not sparsifier.frozen:
        logger.warning(
            "training ended before the pruning schedule finished (end epoch %.2f > %d epochs); "
            "freezing masks at sparsity %.3f",
            sparsity.end if sparsity else float("nan"),
            config.epochs,
            sparsifier.current_sparsity,
        )
        sparsifier.freeze()
    model.eval()
    _, test_correct, test_n = evaluate(model, data.test, device=device)
    return TrainResult(
        model=model,
        history=history,
        sparsifier=sparsifier,
        test_accuracy=test_correct / max(test_n, 1),
        test_correct=test_correct,
        test_n=test_n,
        best_epoch=best_epoch,
        seconds=time.perf_counter() - t_start,
    )


def with_overrides(config: TrainConfig, **overrides: Any) -> TrainConfig:
    """``dataclasses.replace`` ignoring ``None`` values (CLI flags that were not given)."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
