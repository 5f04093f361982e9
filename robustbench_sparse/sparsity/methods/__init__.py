"""Pluggable pruning methods behind the one sparsifier interface (``prepare`` / ``step`` / ...).

:func:`create_sparsifier` maps ``SparsityConfig.method`` to its sparsifier; every one is a
:class:`~robustbench_sparse.sparsity.base.Sparsifier` subclass, so ``fit``, checkpoints and
reports treat them alike, reaching method-specific steps only through the base's hooks:

- ``campfire``: :class:`CampfireSparsifier` (structured gradual magnitude pruning); with
  granularity ``nm`` its subclass :class:`NMSparsifier` (N:M along input channels).
- ``gmp``: :class:`GMPSparsifier` (Zhu & Gupta, unstructured, layer-wise; Campfire's
  unstructured masks under its own name).
- ``random``: :class:`RandomSparsifier` (random masks at init, uniform / ERK; Liu et al. 2022).
- ``grasp``: :class:`GraspSparsifier` (GraSP at init; Wang et al. 2020): its
  ``on_train_start`` hook runs ``calibrate(model, batches)`` before training.
- ``filter``: :class:`FilterSparsifier` (gradual whole-filter pruning with BatchNorm masked).
- ``hydra``: :class:`HydraSparsifier` (HYDRA, Sehwag et al. 2020: scores learned with the robust
  loss at epoch ``start``, weights frozen; its ``on_batch_start`` hook runs ``learn_scores``
  when ``scores_due``).
- ``autosparse``: :class:`AutoSparseSparsifier` (Kundu et al. 2023: learnable STR thresholds with
  Gradient Annealing on dense latent weights; learned sparsity, baked at the end).
- ``campfire-ga``: :class:`CampfireGASparsifier` ("GA on top-k": Campfire's structured masks,
  annealed gradients at pruned positions until ``end``).
- ``tost``: :class:`TostSparsifier` (ToST, Jaiswal et al. 2022: a fixed mask trained with ghost
  activations / skip paths annealed away, ToST's label smoothing and rescaled init; its
  ``label_smoothing`` hook sets the run's losses').
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity.base import Sparsifier
from robustbench_sparse.sparsity.config import PruningMethod, SparsityConfig
from robustbench_sparse.sparsity.granularity import Granularity
from robustbench_sparse.sparsity.methods.autosparse import AutoSparseSparsifier
from robustbench_sparse.sparsity.methods.campfire_ga import CampfireGASparsifier
from robustbench_sparse.sparsity.methods.filter import (
    FilterSparsifier,
    conv_bn_pairs,
    export_thin,
    filter_mask,
    filter_sparsity_figures,
)
from robustbench_sparse.sparsity.methods.gmp import GMPSparsifier
from robustbench_sparse.sparsity.methods.grasp import GraspSparsifier
from robustbench_sparse.sparsity.methods.hydra import HydraSparsifier
from robustbench_sparse.sparsity.methods.nm import NMSparsifier
from robustbench_sparse.sparsity.methods.random import RandomSparsifier
from robustbench_sparse.sparsity.methods.tost import TostSparsifier
from robustbench_sparse.sparsity.sparsifier import CampfireSparsifier

_CLASSES: dict[PruningMethod, type[Sparsifier]] = {
    PruningMethod.CAMPFIRE: CampfireSparsifier,
    PruningMethod.GMP: GMPSparsifier,
    PruningMethod.RANDOM: RandomSparsifier,
    PruningMethod.GRASP: GraspSparsifier,
    PruningMethod.FILTER: FilterSparsifier,
    PruningMethod.HYDRA: HydraSparsifier,
    PruningMethod.AUTOSPARSE: AutoSparseSparsifier,
    PruningMethod.CAMPFIRE_GA: CampfireGASparsifier,
    PruningMethod.TOST: TostSparsifier,
}


def create_sparsifier(config: SparsityConfig, steps_per_epoch: int) -> Sparsifier:
    """The sparsifier of ``config.method`` (a :class:`~robustbench_sparse.sparsity.base.Sparsifier`)."""
    if config.method is PruningMethod.CAMPFIRE and config.granularity is Granularity.NM:
        return NMSparsifier(config, steps_per_epoch)
    if config.method not in _CLASSES:  # a post-training method (robustbench_sparse.posttrain)
        name = config.method.value
        raise UserError(
            f"{name} is a post-training method, not a training one: train dense, then run "
            f"rbs prune CKPT --sparsity S --out DIR --method {name}"
        )
    return _CLASSES[config.method](config, steps_per_epoch)


def calibration_batches(
    dataset: Dataset[Any], *, batch_size: int, seed: int, device: torch.device
) -> Iterator[tuple[Tensor, Tensor]]:
    """Seeded shuffled training batches on ``device`` for methods that score from data (GraSP, HYDRA).

    Not sharded under DDP: every rank sees the same batches, so every rank computes the same masks.
    """
    generator = torch.Generator().manual_seed(seed)
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator):
        yield x.to(device), y.to(device)


__all__ = [
    "AutoSparseSparsifier",
    "CampfireGASparsifier",
    "FilterSparsifier",
    "GMPSparsifier",
    "GraspSparsifier",
    "HydraSparsifier",
    "NMSparsifier",
    "RandomSparsifier",
    "TostSparsifier",
    "calibration_batches",
    "conv_bn_pairs",
    "create_sparsifier",
    "export_thin",
    "filter_mask",
    "filter_sparsity_figures",
]
