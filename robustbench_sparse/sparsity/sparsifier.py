"""Campfire: gradual magnitude pruning to a structured pattern, frozen after the end step.

Usage (shaped like ``torch.ao.pruning``)::

    sparsifier = CampfireSparsifier(config, steps_per_epoch=len(train_loader))
    sparsifier.prepare(model)
    for x, y in batches:
        loss = criterion(model(x), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        sparsifier.step(optimizer)      # after every optimizer step

:class:`GradualSparsifier` is the cubic schedule shared by every gradual method (Campfire, GMP,
filter pruning); :class:`CampfireSparsifier` adds Campfire's structured masks. The mask
machinery (records, hooks, optimizer state, ``state_dict``) is the
:class:`~robustbench_sparse.sparsity.base.Sparsifier` base.
"""

from __future__ import annotations

from torch import Tensor

from robustbench_sparse.sparsity.base import PrunedLayer, Sparsifier
from robustbench_sparse.sparsity.masks import compute_mask
from robustbench_sparse.sparsity.schedule import cubic_sparsity

__all__ = ["CampfireSparsifier", "GradualSparsifier"]


class GradualSparsifier(Sparsifier):
    """Masks recomputed along the Zhu & Gupta cubic schedule, monotone, frozen after ``end``.

    With ``t0 = epochs_to_steps(start)`` and ``t1 = epochs_to_steps(end)``, masks are recomputed
    at every ``t`` in ``[t0, t1]`` with ``(t - t0) % update_every == 0`` and always at
    ``t == t1``; after ``t1`` they are frozen. (``t = 0`` is handled by :meth:`prepare`, so
    ``start = end = 0`` prunes once, up front.) Subclasses give the per-layer
    :meth:`update_mask`, which must keep pruned weights pruned.
    """

    def sparsity_at(self, step: int) -> float:
        """Scheduled target sparsity at optimizer step ``step`` (pure; no side effects)."""
        return cubic_sparsity(
            step,
            initial=self.config.initial,
            final=self.config.target,
            start_step=self.start_step,
            end_step=self.end_step,
        )

    def mask_update_due(self, step: int) -> bool:
        """True at the schedule's update steps inside ``[start_step, end_step]``."""
        if step < self.start_step or step > self.end_step:
            return False
        return step == self.end_step or (step - self.start_step) % self.config.update_every == 0


class CampfireSparsifier(GradualSparsifier):
    """Prunes the selected layers of a model along the cubic schedule and keeps them pruned.

    Every update keeps, per group of the configured granularity (window, channel, combined or
    the whole layer), the same number of largest-magnitude weights
    (:func:`~robustbench_sparse.sparsity.masks.compute_mask`); masks are monotone: a pruned
    weight never returns.
    """

    def update_mask(self, layer: PrunedLayer, sparsity: float) -> Tensor:
        """The new keep-mask of ``layer`` at ``sparsity`` (monotone wrt the current mask)."""
        return compute_mask(layer.param, sparsity, self.config.granularity, previous=layer.mask)
