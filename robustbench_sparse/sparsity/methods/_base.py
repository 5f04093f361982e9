"""Shared base of the pruning-at-initialization methods (``random``, ``grasp``)."""

from __future__ import annotations

from torch import Tensor

from robustbench_sparse.sparsity.sparsifier import CampfireSparsifier


class PruneAtInitSparsifier(CampfireSparsifier):
    """A sparsifier whose masks are set once, before training, and frozen immediately.

    The schedule fields of the config (``initial``, ``start``, ``end``, ``update_every``) are
    ignored: :meth:`_due` is never true. Subclasses compute the masks and call :meth:`_install`.
    Everything else (gradient hooks, re-applying masks after every step, zeroing optimizer state,
    ``state_dict``) is the Campfire machinery unchanged.
    """

    def _due(self, t: int) -> bool:
        return False

    def _install(self, masks: dict[str, Tensor]) -> None:
        """Set every layer's mask, freeze, and zero the pruned weights."""
        for name, mask in masks.items():
            self._set_mask(name, mask)
        self._sparsity = self.config.target
        self._updates += 1
        self._frozen = True
        self.apply_masks()
