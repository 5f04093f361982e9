"""``campfire-ga``: "GA on top-k": Campfire's structured masks with Gradient Annealing.

AutoSparse (Kundu et al. 2023, arXiv 2304.06941) reports that Gradient Annealing "generalizes
well to fixed-budget (Top-K) sparse training". This method applies it to Campfire: the masks are
Campfire's (:func:`~robustbench_sparse.sparsity.masks.compute_mask` at ``granularity``) on the
cubic schedule from ``start`` to ``end``, but until ``end`` a pruned position keeps an
``alpha``-scaled gradient (the forward uses ``W ⊙ m``; ``dL/dW = g ⊙ (m + alpha (1 - m))``) on a
dense latent ``W``, and each update ranks the latent ``|W|`` afresh (``previous`` is not passed:
the masks are *not* monotone, a pruned weight can return). ``alpha`` is
:func:`~robustbench_sparse.sparsity.methods.annealing.ga_alpha` with ``alpha0 = ga_alpha0``,
horizon ``T = end`` and reset at ``end`` (AutoSparse's alpha reset is Campfire's freeze). From
``end`` on the latent copies are dropped and it is plain Campfire with frozen masks. Not in the
Campfire or AutoSparse papers as such; it is the composition the research note proposes.
Granularities: window, channel, combined, unstructured (``nm`` is refused by the config).
GA acts only between mask updates inside the ramp: with ``initial = 0`` and a ramp of one update
(``update_every`` at least ``end - start`` in steps) nothing is pruned before the masks freeze, and
the run equals Campfire's bit for bit (seen with ``rbs run --epochs 2``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustbench_sparse.sparsity.base import PrunedLayer
from robustbench_sparse.sparsity.config import PruningMethod, SparsityConfig
from robustbench_sparse.sparsity.masks import compute_mask
from robustbench_sparse.sparsity.methods.annealing import ga_alpha
from robustbench_sparse.sparsity.methods.latent import LatentSparsifier
from robustbench_sparse.sparsity.sparsifier import GradualSparsifier

__all__ = ["CampfireGASparsifier"]


class CampfireGASparsifier(LatentSparsifier, GradualSparsifier):
    """Campfire's schedule and structured masks; annealed gradients at pruned positions."""

    def __init__(self, config: SparsityConfig, steps_per_epoch: int) -> None:
        if config.method is not PruningMethod.CAMPFIRE_GA:
            raise ValueError(
                f"CampfireGASparsifier needs method 'campfire-ga', got {config.method.value!r}"
            )
        super().__init__(config, steps_per_epoch)
        self.alpha = self.alpha_at(0)

    def alpha_at(self, epoch: float) -> float:
        """GA's ``alpha`` during epoch ``epoch`` (0-based): decays over ``end``, 0 from it on."""
        return ga_alpha(epoch, self.config.ga_alpha0, self.config.end, self.config.end)

    def effective(self, name: str, latent: Tensor) -> Tensor:
        """``W ⊙ m`` in value (exact ``+0.0`` where pruned); gradient ``m + alpha (1 - m)``."""
        m = self._layers[name].fmask
        annealed = self.alpha * (1.0 - m) * (latent - latent.detach())  # value 0, slope alpha
        return latent * m + annealed + 0.0

    def update_mask(self, layer: PrunedLayer, sparsity: float) -> Tensor:
        """Campfire's mask of the *latent* ``|W|`` at ``sparsity``, not monotone while GA runs."""
        latent = self._latent.get(layer.name)
        if latent is None:  # after GA: the ordinary monotone update
            return compute_mask(layer.param, sparsity, self.config.granularity, previous=layer.mask)
        return compute_mask(latent, sparsity, self.config.granularity)

    def prepare(self, model: nn.Module) -> None:
        """As :class:`LatentSparsifier`; masks already final at ``t = 0`` end GA at once."""
        super().prepare(model)
        if self._frozen:
            self.finish_latent()

    def step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """The latent step; when the masks froze at ``end``, GA ends (plain Campfire after)."""
        super().step(optimizer)
        if self._frozen and self.latent_active:
            self.finish_latent()

    def on_epoch_end(self, epoch: int) -> None:
        """``alpha`` for epoch ``epoch + 1``."""
        self.alpha = self.alpha_at(epoch + 1) if self.latent_active else 0.0

    def on_train_end(self, epochs: int) -> None:
        """Freeze an unfinished schedule (warning, as Campfire) and end GA."""
        super().on_train_end(epochs)
        self.finish_latent()

    def freeze(self) -> None:
        """Fix the current masks and end GA."""
        super().freeze()
        self.finish_latent()
