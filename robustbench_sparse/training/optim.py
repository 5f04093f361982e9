"""The optimizer and the learning-rate schedule of a :class:`TrainConfig`."""

from __future__ import annotations

import math

import torch
from torch import nn

from robustbench_sparse.training.config import LRSchedule, OptimizerName, TrainConfig


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
