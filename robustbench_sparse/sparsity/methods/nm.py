"""``nm`` granularity: Campfire's gradual magnitude pruning to an N:M pattern along input channels.

At every kernel position ``(k, r, s)`` of a conv weight ``W[K, C, kh, kw]`` (a Linear's row),
every group of ``M`` consecutive input channels keeps the same ``N`` largest-|w| weights (default
2:4): the layout NVIDIA's sparse tensor cores accept (Mishra et al., "Accelerating Sparse Deep
Neural Networks", arXiv 2104.08378; apex ASP and ModelOpt build the same masks). It keeps
Campfire's balanced count per group (Gamboa et al., arXiv 2001.03253) with the group along the
reduction axis instead of the k×k window; ``window`` stays the paper's pattern.

Schedule: the cubic ramp of :class:`~robustbench_sparse.sparsity.sparsifier.CampfireSparsifier`
(the groups pass 4:4 -> 3:4 -> 2:4 as the scheduled sparsity grows), masks monotone and frozen
at ``end``. A target above ``1 - N/M`` keeps N:M and removes whole filters on top
(:func:`~robustbench_sparse.sparsity.masks.nm_counts`); the BatchNorm reading a removed filter
is masked as in ``filter`` pruning, so the channel is exactly zero and ``rbs export --format
thin`` can drop it.

Layers whose input channels are not a multiple of ``M`` (a first conv on 1- or 3-channel
images, if selected) are left dense: they are not selected, the log names them, and the
sparsity report counts them as dense weights in the all-layers denominator.
"""

from __future__ import annotations

import logging

from torch import Tensor, nn

from robustbench_sparse.sparsity.base import PrunedLayer
from robustbench_sparse.sparsity.config import SparsityConfig
from robustbench_sparse.sparsity.granularity import Granularity
from robustbench_sparse.sparsity.masks import compute_mask, nm_eligible
from robustbench_sparse.sparsity.methods.filter import output_channel_params
from robustbench_sparse.sparsity.sparsifier import CampfireSparsifier

logger = logging.getLogger(__name__)

__all__ = ["NMSparsifier"]


class NMSparsifier(CampfireSparsifier):
    """Campfire with granularity ``nm``: N:M along input channels, filters beyond ``1 - N/M``."""

    def __init__(self, config: SparsityConfig, steps_per_epoch: int) -> None:
        if config.granularity is not Granularity.NM:
            raise ValueError(f"NMSparsifier needs granularity 'nm', got {config.granularity.value}")
        super().__init__(config, steps_per_epoch)
        self.nm = config.nm_pair

    def select_layers(self, model: nn.Module) -> list[str]:
        """The configured selection minus layers whose input channels are not a multiple of M."""
        params = dict(model.named_parameters())
        names = super().select_layers(model)
        kept = [n for n in names if nm_eligible(params[n].shape, self.nm[1])]
        skipped = [n for n in names if n not in kept]
        if skipped:
            logger.warning(
                "nm %d:%d leaves dense (input channels not a multiple of %d): %s",
                *self.nm,
                self.nm[1],
                ", ".join(skipped),
            )
        return kept

    def channel_params(self, model: nn.Module, name: str) -> list[Tensor]:
        """Bias and consuming BatchNorm affine: they die with a filter removed beyond ``1 - N/M``."""
        n, m = self.nm
        removes_filters = self.config.target > 1.0 - n / m + 1e-9
        extras, _ = output_channel_params(model, name, warn=removes_filters)
        return extras

    def update_mask(self, layer: PrunedLayer, sparsity: float) -> Tensor:
        """The N:M mask at ``sparsity`` (monotone wrt the current mask)."""
        return compute_mask(layer.param, sparsity, Granularity.NM, previous=layer.mask, nm=self.nm)
