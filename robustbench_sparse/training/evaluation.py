"""Accuracy of a model on a dataset: clean (:func:`evaluate`) and PGD-robust, sharded under DDP."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from robustbench_sparse import distributed as rdist
from robustbench_sparse.adversarial import AdversarialConfig


def evaluate_all(
    model: nn.Module, dataset: Dataset[Any], *, device: torch.device, batch_size: int = 256
) -> tuple[float, int, int]:
    """:func:`evaluate` over the whole ``dataset``; sharded across ranks and all-reduced under DDP.

    Every rank gets the same numbers (the sums are all-reduced in float64).
    """
    if not rdist.is_distributed():
        return evaluate(model, dataset, device=device, batch_size=batch_size)
    lo, hi = rdist.shard_range(len(dataset))  # type: ignore[arg-type]
    mean, correct, n = evaluate(
        model, Subset(dataset, range(lo, hi)), device=device, batch_size=batch_size
    )
    loss_sum, correct_f, n_f = rdist.all_reduce_sum([mean * n, correct, n])
    return loss_sum / max(n_f, 1.0), round(correct_f), round(n_f)


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


def robust_accuracy_all(
    model: nn.Module,
    dataset: Dataset[Any],
    config: AdversarialConfig,
    *,
    device: torch.device,
    seed: int,
    batch_size: int = 256,
) -> float:
    """PGD robust accuracy of ``model`` on ``dataset`` at the training budget ``config.eps``.

    The attack is the project's native PGD (``pgd`` / ``pgd-l2`` from :mod:`attacks.registry`,
    ``config.effective_val_steps`` steps of ``2.5 / steps * eps``, random start, seeded), so every
    adversarial is verified in the ball and ``[0, 1]`` before it counts. Sharded and all-reduced
    under DDP (every rank gets the same number).
    """
    from attacks.registry import get_attack

    steps = config.effective_val_steps
    attack = get_attack(
        "pgd" if config.norm.value == "linf" else "pgd-l2",
        steps=steps,
        rel_stepsize=2.5 / steps,
        seed=seed,
    )
    subset: Dataset[Any] = dataset
    if rdist.is_distributed():
        lo, hi = rdist.shard_range(len(dataset))  # type: ignore[arg-type]
        subset = Subset(dataset, range(lo, hi))
    robust, n = 0.0, 0
    for x, y in DataLoader(subset, batch_size=batch_size, shuffle=False):
        x, y = x.to(device), y.to(device)
        result = attack(model, x, y, epsilons=[config.eps])
        robust += float((~result.success[0]).sum())
        n += int(y.numel())
    if rdist.is_distributed():
        robust, n_f = rdist.all_reduce_sum([robust, n])
        n = round(n_f)
    return robust / max(n, 1)
