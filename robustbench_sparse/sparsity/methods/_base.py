"""Shared base of the pruning-at-initialization methods (``random``, ``grasp``, ``hydra``)."""

from __future__ import annotations

from torch import Tensor

from robustbench_sparse.sparsity.base import Sparsifier


class PruneAtInitSparsifier(Sparsifier):
    """A sparsifier whose masks are set once, as a whole, and frozen immediately.

    The schedule fields of the config (``initial``, ``end``, ``update_every``) are ignored:
    :meth:`mask_update_due` is never true. Subclasses compute the masks and call
    :meth:`_install`. Everything else (gradient hooks, re-applying masks after every step,
    zeroing optimizer state, ``state_dict``) is the :class:`Sparsifier` machinery.
    """

    def _install(self, masks: dict[str, Tensor], sparsity: float | None = None) -> None:
        """Set every layer's mask at the target sparsity, freeze, and zero the pruned weights."""
        super()._install(masks, self.config.target if sparsity is None else sparsity)
