"""What each epoch trains on: the seeded validation hold-out, the per-epoch loader, the DDP layout.

The data order and augmentation of epoch ``e`` depend only on ``(seed, e)``, so a resumed run sees
exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from robustbench_sparse import distributed as rdist
from robustbench_sparse.errors import UserError
from robustbench_sparse.training.config import TrainConfig


@dataclass(frozen=True)
class ValidationSplit:
    """Indices of a seeded hold-out of the training set (:func:`validation_split`)."""

    train_indices: list[int]
    val_indices: list[int]
    fraction: float
    seed: int

    def record(self) -> dict[str, Any]:
        """What checkpoints store: rule, sizes and a SHA-256 of the sorted validation indices."""
        digest = hashlib.sha256(",".join(map(str, sorted(self.val_indices))).encode()).hexdigest()
        return {
            "fraction": self.fraction,
            "seed": self.seed,
            "n_train": len(self.train_indices),
            "n_val": len(self.val_indices),
            "rule": "torch.randperm(n, generator=manual_seed(seed)); the first n_val are held out",
            "val_indices_sha256": digest,
        }


def validation_split(n: int, fraction: float, seed: int) -> ValidationSplit:
    """Hold out ``round(fraction * n)`` (at least 1 when ``fraction > 0``) of ``n`` examples.

    The permutation comes from its own ``torch.Generator`` seeded with ``seed``, so the split does
    not touch the global RNG and is the same on every rank and every resume. Both index lists
    are sorted (the training order is shuffled by the loader anyway).

    Raises:
        UserError: the hold-out would leave no training example.
    """
    if fraction <= 0:
        return ValidationSplit(list(range(n)), [], 0.0, seed)
    n_val = max(1, round(fraction * n))
    if n_val >= n:
        raise UserError(
            f"validation fraction {fraction} of {n} training examples leaves none to train on; "
            "lower --val-fraction or use more training data"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return ValidationSplit(sorted(perm[n_val:]), sorted(perm[:n_val]), fraction, seed)


def train_loader(
    dataset: Dataset[Any], config: TrainConfig, *, shuffle: bool, seed: int, epoch: int = 0
) -> DataLoader:
    """The loader of one epoch: shuffled by ``seed`` alone (single process) or, under DDP, by
    ``(config.seed, epoch)`` through a ``DistributedSampler`` giving each rank its own part."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    if rdist.is_distributed():
        # Every rank sees a disjoint ceil(N / W) part (padded by repetition), ordered by
        # (config.seed, epoch) only: resumable like the single-process order.
        sampler: DistributedSampler[Any] = DistributedSampler(
            dataset, shuffle=shuffle, seed=config.seed, drop_last=False
        )
        sampler.set_epoch(epoch)
        return DataLoader(
            dataset,
            batch_size=config.batch_size,
            sampler=sampler,
            drop_last=False,
            num_workers=config.num_workers,
            generator=generator,
        )
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=shuffle,
        drop_last=False,
        num_workers=config.num_workers,
        generator=generator,
    )


def distributed_layout(config: TrainConfig, n_train: int) -> dict[str, Any]:
    """World size, per-rank / effective batch and the LR actually used (recorded in checkpoints)."""
    world = rdist.world_size()
    per_rank = math.ceil(n_train / world)
    return {
        "world_size": world,
        "backend": rdist.backend(),
        "per_rank_batch_size": config.batch_size,
        "effective_batch_size": config.batch_size * world,
        "steps_per_epoch": max(math.ceil(per_rank / config.batch_size), 1),
        "base_lr": config.lr,
        "scale_lr": config.scale_lr,
        "effective_lr": config.lr * world if config.scale_lr else config.lr,
        "sync_bn": bool(config.sync_bn and world > 1),
    }
