"""One training epoch: seeded batches, forward/backward (clean or adversarial), sparsifier hooks.

:func:`train_one_epoch` runs the optimizer over one epoch's batches of a :class:`TrainingRun`
and returns the epoch's summed losses and counts (all-reduced under DDP). The sparsifier's
:meth:`~robustbench_sparse.sparsity.Sparsifier.on_batch_start` hook runs before every step and
:meth:`~robustbench_sparse.sparsity.Sparsifier.step` after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from robustbench_sparse import distributed as rdist
from robustbench_sparse.adversarial import AdversarialConfig, robust_loss
from robustbench_sparse.errors import UserError
from robustbench_sparse.progress import progress_bar
from robustbench_sparse.sparsity import Sparsifier, TrainingContext
from robustbench_sparse.training.config import TrainConfig
from robustbench_sparse.training.data import train_loader
from robustbench_sparse.training.records import BestEpochs, Checkpointer, EpochRecord

__all__ = ["EpochTotals", "MaskSync", "TrainingRun", "share_rank0_masks", "train_one_epoch"]


class MaskSync:
    """Verifies the masks across ranks whenever the sparsifier recomputed or loaded them."""

    def __init__(self, sparsifier: Sparsifier | None) -> None:
        self.sparsifier = sparsifier
        self.seen = -1
        self.verified = 0

    def check(self) -> None:
        """Compare the masks of every rank if they changed since the last check (DDP only)."""
        sp = self.sparsifier
        if sp is None or not rdist.is_distributed() or sp.update_count == self.seen:
            return
        self.seen = sp.update_count
        if rdist.verify_masks_identical(sp.masks):
            self.verified += 1


def share_rank0_masks(sparsifier: Sparsifier) -> None:
    """Under DDP, make every rank load rank 0's sparsifier state (masks scored on a GPU need
    not be bitwise equal across ranks). A no-op in a single process."""
    if rdist.is_distributed():
        sparsifier.load_state_dict(rdist.broadcast_object(sparsifier.state_dict()))


@dataclass
class TrainingRun:
    """Everything one ``fit`` call trains with, shared by its named steps."""

    model: nn.Module  # unwrapped; the sparsifier and checkpoints see these parameters
    train_model: nn.Module  # the model, or its DistributedDataParallel wrapper
    train_set: Dataset[Any]
    val_set: Dataset[Any] | None
    test_set: Dataset[Any]
    config: TrainConfig
    adv: AdversarialConfig | None
    device: torch.device
    use_amp: bool
    steps_per_epoch: int
    layout: dict[str, Any]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    sparsifier: Sparsifier | None
    mask_sync: MaskSync
    context: TrainingContext
    checkpointer: Checkpointer | None
    progress: bool
    history: list[EpochRecord] = field(default_factory=list)
    best: BestEpochs = field(default_factory=BestEpochs)


@dataclass
class EpochTotals:
    """Sums over one epoch's training examples (clean and, with adversarial training, adv)."""

    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    adv_loss_sum: float = 0.0
    adv_correct: int = 0
    eps: float = 0.0  # the adversarial budget at the last step

    def add(
        self,
        loss: torch.Tensor,
        logits: torch.Tensor,
        logits_adv: torch.Tensor | None,
        y: torch.Tensor,
    ) -> dict[str, str]:
        """Count one batch; returns the progress-bar postfix."""
        batch = int(y.numel())
        self.seen += batch
        if logits_adv is None:
            self.loss_sum += float(loss.detach()) * batch
            self.correct += int((logits.detach().argmax(1) == y).sum())
            return {
                "loss": f"{self.loss_sum / self.seen:.3f}",
                "acc": f"{self.correct / self.seen:.3f}",
            }
        with torch.no_grad():
            lc = logits.detach().float()
            la = logits_adv.detach().float()
            self.loss_sum += float(nn.functional.cross_entropy(lc, y, reduction="sum"))
            self.adv_loss_sum += float(nn.functional.cross_entropy(la, y, reduction="sum"))
        self.correct += int((lc.argmax(1) == y).sum())
        self.adv_correct += int((la.argmax(1) == y).sum())
        return {
            "clean": f"{self.loss_sum / self.seen:.3f}/{self.correct / self.seen:.3f}",
            "adv": f"{self.adv_loss_sum / self.seen:.3f}/{self.adv_correct / self.seen:.3f}",
            "eps": f"{self.eps:.3g}",
        }

    def all_reduce(self) -> None:
        """Sum the totals over all ranks (DDP)."""
        loss_sum, correct, seen, adv_loss_sum, adv_correct = rdist.all_reduce_sum(
            [self.loss_sum, self.correct, self.seen, self.adv_loss_sum, self.adv_correct]
        )
        self.loss_sum, self.adv_loss_sum = loss_sum, adv_loss_sum
        self.correct, self.seen, self.adv_correct = round(correct), round(seen), round(adv_correct)


def _train_step(
    run: TrainingRun, x: torch.Tensor, y: torch.Tensor, step: int, totals: EpochTotals
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One optimizer step on ``(x, y)`` (global step index ``step``): (loss, logits, adv logits)."""
    config, device = run.config, run.device
    logits_adv: torch.Tensor | None = None
    run.optimizer.zero_grad(set_to_none=True)
    if run.adv is None:
        with torch.autocast(device_type=device.type, enabled=run.use_amp):
            logits = run.train_model(x)
            loss = run.criterion(logits, y)
    else:
        totals.eps = run.adv.eps_at(step, run.steps_per_epoch)
        with torch.autocast(device_type=device.type, enabled=run.use_amp):
            # Crafting reads the unwrapped model (no DDP reducer, own shard only).
            out = robust_loss(
                run.model,
                x,
                y,
                run.adv,
                totals.eps,
                forward=run.train_model,
                label_smoothing=config.label_smoothing,
            )
        loss, logits, logits_adv = out.loss, out.logits_clean, out.logits_adv
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return loss, logits, logits_adv


def train_one_epoch(run: TrainingRun, epoch: int) -> EpochTotals:
    """Train over epoch ``epoch`` (0-based); the totals are summed over all ranks.

    Raises:
        UserError: the loss diverged (is not finite).
    """
    config, sparsifier = run.config, run.sparsifier
    # Data order and augmentation of this epoch depend on (seed, epoch) only: resumable.
    # (Ranks > 0 offset the augmentation seed; rank 0 draws what a single process draws.)
    torch.manual_seed(config.seed * 100_003 + epoch + 1_000_003 * rdist.rank())
    loader = train_loader(
        run.train_set, config, shuffle=True, seed=config.seed * 100_003 + epoch, epoch=epoch
    )
    run.train_model.train()
    totals = EpochTotals()
    bar = progress_bar(
        loader,
        desc=f"epoch {epoch + 1}/{config.epochs}",
        leave=False,
        disable=not (run.progress and rdist.is_main()),
        unit="batch",
    )
    for i, (x, y) in enumerate(bar):
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        if sparsifier is not None and sparsifier.on_batch_start(run.context):
            share_rank0_masks(sparsifier)
            run.mask_sync.check()
        loss, logits, logits_adv = _train_step(run, x, y, epoch * run.steps_per_epoch + i, totals)
        if sparsifier is not None:
            sparsifier.step(run.optimizer)
            run.mask_sync.check()
        postfix = totals.add(loss, logits, logits_adv, y)
        postfix["sparsity"] = f"{sparsifier.current_sparsity:.2f}" if sparsifier else "0"
        bar.set_postfix(postfix)
    if sparsifier is not None:
        sparsifier.on_epoch_end(epoch)
        run.mask_sync.check()
    if rdist.is_distributed():
        totals.all_reduce()
        # DDP broadcasts buffers before each forward, so the last batch left every rank
        # with its own BatchNorm statistics: take rank 0's before evaluating and saving.
        rdist.broadcast_buffers(run.model)
    if not math.isfinite(totals.loss_sum):
        raise UserError(f"training diverged at epoch {epoch + 1} (loss is not finite); lower --lr")
    return totals
