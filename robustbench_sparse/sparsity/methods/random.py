"""``random``: random pruning at initialization with fixed masks.

Liu, Chen, Chen, Atashgahi, Yin, Kou, Shen, Pechenizkiy, Wang, Mocanu, "The Unreasonable
Effectiveness of Random Pruning: Return of the Most Naive Baseline for Sparse Training",
ICLR 2022 (arXiv 2202.02643).

Before the first optimizer step every pruned layer keeps a uniformly random subset of its weights
(exactly ``kept_count(numel, density_l)`` of them) and the masks never change. The layer-wise
densities ``density_l`` are ``uniform`` (every layer at the target) or ``erk``
(Erdős–Rényi-Kernel, see :mod:`robustbench_sparse.sparsity.allocation`), which the paper finds
essential at high sparsity. The masks are drawn from a generator seeded by one draw of the global
torch RNG at :meth:`prepare` time, so they follow the training seed (``fit`` seeds the RNG
identically on every rank before preparing the sparsifier).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from robustbench_sparse.sparsity.allocation import kept_count, layer_densities
from robustbench_sparse.sparsity.config import PruningMethod, SparsityConfig
from robustbench_sparse.sparsity.masks import _keep_top
from robustbench_sparse.sparsity.methods._base import PruneAtInitSparsifier


def random_masks(
    weights: Mapping[str, Tensor], densities: dict[str, float], generator: torch.Generator
) -> dict[str, Tensor]:
    """For each weight, a bool mask keeping ``kept_count(numel, density)`` random positions."""
    out = {}
    for name, weight in weights.items():
        scores = torch.rand(weight.numel(), generator=generator).reshape(1, -1)  # (1, numel)
        keep = kept_count(weight.numel(), densities[name])
        out[name] = _keep_top(scores, keep).reshape(weight.shape).to(weight.device)
    return out


class RandomSparsifier(PruneAtInitSparsifier):
    """Random masks at :meth:`prepare` (uniform or ERK layer-wise densities), frozen at once."""

    def __init__(self, config: SparsityConfig, steps_per_epoch: int) -> None:
        if config.method is not PruningMethod.RANDOM:
            raise ValueError(f"RandomSparsifier needs method 'random', got {config.method.value!r}")
        super().__init__(config, steps_per_epoch)
        self.mask_seed: int | None = None

    @property
    def layer_densities(self) -> dict[str, float]:
        """The density allocated to each pruned layer (from the shapes and the config)."""
        weights = self.weights
        names = list(weights)
        densities = layer_densities(
            [tuple(weights[n].shape) for n in names],
            self.config.target,
            self.config.random_distribution,
        )
        return dict(zip(names, densities, strict=True))

    def prepare(self, model: nn.Module) -> None:
        """Select the layers, then draw and freeze the random masks."""
        super().prepare(model)
        if not self._layers:
            return
        self.mask_seed = int(torch.randint(0, 2**62, (1,)).item())
        generator = torch.Generator().manual_seed(self.mask_seed)
        self._install(random_masks(self.weights, self.layer_densities, generator))
