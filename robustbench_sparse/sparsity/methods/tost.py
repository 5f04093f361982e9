"""``tost``: ToST, the training recipe for a fixed sparse mask.

Jaiswal, Ma, Chen, Ding, Wang, "Training Your Sparse Neural Network Better with Any Mask",
ICML 2022 (arXiv 2206.12755); reference code VITA-Group/ToST@2b5bac2 (four separate scripts,
one per trick; this class combines them, as the paper's ToST does).

At :meth:`TostSparsifier.prepare` the mask is set once and never changes:

- ``mask_from`` a checkpoint: its saved masks (same layers and shapes required); or
- ``tost_mask = "campfire"`` (default): Campfire's ``granularity`` mask at ``target`` from the
  initial weights' magnitudes; ``"random"``: random masks at the ``random_distribution``
  densities (uniform / ERK, Liu et al. 2022), drawn like ``--method random``.

Then the recipe:

1. Layer-wise rescaling of the kept initial weights (``tost_rescale``; see
   :func:`~robustbench_sparse.sparsity.methods.tost_masks.rescale_kept`: closed form, not GradInit).
2. Ghost activations and ghost 1x1 skip paths (:mod:`.tost_ghosts`) at full strength until
   epoch ``start``, annealed linearly to 0 at epoch ``end`` (per optimizer step), then removed:
   at removal their strength is exactly 0, so the logits do not change. Until then the model is
   not final, so :attr:`frozen` is False (``fit`` selects no ``best`` checkpoint before). The
   paper applies the ghosts "at the early stage of training"; its released code never removes
   them (they stay at inference): the paper's word is followed here.
3. ToST's label smoothing (:meth:`TostSparsifier.label_smoothing`).

Ghost parameters are in no mask and no sparsity denominator (they are not ``Conv2d`` modules).
Not under ``torchrun``: removing modules mid-run would break DistributedDataParallel.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from robustbench_sparse import distributed as rdist
from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity.allocation import layer_densities
from robustbench_sparse.sparsity.base import Sparsifier, TrainingContext
from robustbench_sparse.sparsity.config import PruningMethod, SparsityConfig
from robustbench_sparse.sparsity.methods.random import random_masks
from robustbench_sparse.sparsity.methods.tost_ghosts import Ghosts, install_ghosts
from robustbench_sparse.sparsity.methods.tost_masks import (
    campfire_masks_at_init,
    checkpoint_masks,
    match_masks,
    rescale_kept,
)
from robustbench_sparse.sparsity.selection import weight_layers

__all__ = ["TostSparsifier", "check_tost_job", "tost_label_smoothing"]

logger = logging.getLogger(__name__)


def tost_label_smoothing(alpha: float, num_classes: int) -> float:
    """torch's ``label_smoothing`` that gives ToST's targets for ``alpha`` on ``num_classes``.

    ToST (``label-smoothening/train_ticket.py``, ``loss_label_smoothing``) puts ``1 - alpha`` on
    the true class and ``alpha / (C - 1)`` on each other; torch's ``beta`` puts ``beta / C`` on
    every class (true: ``1 - beta + beta / C``). They agree for ``beta = alpha * C / (C - 1)``
    (C = 10, alpha = 0.1: beta = 0.1111; targets 0.90 / 0.0111, not torch's 0.91 / 0.01).
    """
    if num_classes < 2:
        raise UserError(f"label smoothing needs at least 2 classes, got {num_classes}")
    return alpha * num_classes / (num_classes - 1)


def _weight_params(model: nn.Module) -> dict[str, Tensor]:
    """Every Conv2d/Linear weight by parameter name, in registration order."""
    return {f"{m}.weight" if m else "weight": mod.weight for m, mod in weight_layers(model)}


def _check_label_smoothing(config: SparsityConfig, requested: float) -> None:
    if config.tost_label_smoothing > 0.0 and requested > 0.0:
        raise UserError(
            "--method tost applies ToST's own label smoothing (sparsity tost_label_smoothing, "
            "default 0.1): drop --label-smoothing, or set tost_label_smoothing = 0 to use torch's"
        )


def check_tost_job(config: SparsityConfig, label_smoothing: float, model: nn.Module) -> None:
    """What a ``tost`` run can refuse before it starts (``model``: a fresh one of its arch).

    Raises:
        UserError: ``--label-smoothing`` set too (ToST sets its own), or a ``mask_from``
            checkpoint that is unreadable, dense, or whose masks do not fit ``model``.
    """
    if config.method is not PruningMethod.TOST:
        return
    _check_label_smoothing(config, label_smoothing)
    if config.mask_from is not None:
        match_masks(checkpoint_masks(config.mask_from), _weight_params(model), config.mask_from)


class TostSparsifier(Sparsifier):
    """A fixed mask set at :meth:`prepare`, trained with ToST's ghosts, init and labels."""

    def __init__(self, config: SparsityConfig, steps_per_epoch: int) -> None:
        if config.method is not PruningMethod.TOST:
            raise ValueError(f"TostSparsifier needs method 'tost', got {config.method.value!r}")
        super().__init__(config, steps_per_epoch)
        self.ghosts = Ghosts(removed=True)
        self.mask_seed: int | None = None
        self.rescale_factors: dict[str, float] = {}
        self._given: dict[str, Tensor] | None = None

    # ------------------------------------------------------------------ masks
    def select_layers(self, model: nn.Module) -> list[str]:
        """The config's selection, or with ``mask_from`` exactly that checkpoint's masked layers."""
        source = self.config.mask_from
        if source is None:
            return super().select_layers(model)
        weights = _weight_params(model)
        self._given = match_masks(checkpoint_masks(source), weights, source)
        return [name for name in weights if name in self._given]

    def _initial_masks(self) -> dict[str, Tensor]:
        if self._given is not None:
            return self._given
        weights = self.weights
        if self.config.tost_mask == "random":
            names = list(weights)
            densities = layer_densities(
                [tuple(weights[n].shape) for n in names],
                self.config.target,
                self.config.random_distribution,
            )
            self.mask_seed = int(torch.randint(0, 2**62, (1,)).item())
            generator = torch.Generator().manual_seed(self.mask_seed)
            return random_masks(weights, dict(zip(names, densities, strict=True)), generator)
        return campfire_masks_at_init(weights, self.config.target, self.config.granularity)

    def prepare(self, model: nn.Module) -> None:
        """Set the fixed masks, rescale the kept weights, install the ghosts at full strength."""
        if rdist.is_distributed():
            raise UserError(
                "--method tost does not run under torchrun (its ghost paths are removed "
                "mid-training); train it in one process"
            )
        super().prepare(model)
        masks = self._initial_masks()
        for name, mask in masks.items():
            self._layers[name].set_mask(mask)
        if self._given is not None:
            kept = sum(int(m.sum()) for m in masks.values())
            total = sum(m.numel() for m in masks.values())
            self._sparsity = 1.0 - kept / max(total, 1)
        else:
            self._sparsity = self.config.target
        self._updates += 1
        if self.config.tost_rescale:
            self.rescale_factors = rescale_kept(self.weights, masks)
        self.apply_masks()
        self.ghosts = install_ghosts(
            model,
            [layer.module_name for layer in self._layers.values()],
            activation=self.config.tost_activation,
            skip=self.config.tost_skip,
        )
        logger.info(
            "tost: %d fixed masks (sparsity %.4f), %d ghost activations, %d ghost skip paths "
            "annealed over steps %d..%d",
            len(masks),
            self._sparsity,
            len(self.ghosts.activations),
            len(self.ghosts.skips),
            self.start_step,
            self.end_step,
        )
        self._apply_schedule()

    # ------------------------------------------------------------------ ghosts
    def ghost_strength(self, step: int) -> float:
        """Ghost blend / scale at optimizer step ``step``: 1 until ``start``, linear to 0 at ``end``."""
        if step >= self.end_step:
            return 0.0
        if step <= self.start_step:
            return 1.0
        return 1.0 - (step - self.start_step) / (self.end_step - self.start_step)

    def _apply_schedule(self) -> None:
        if self.ghosts.removed:
            return
        strength = self.ghost_strength(self._step)
        self.ghosts.set_strength(strength)
        nothing = not self.ghosts.activations and not self.ghosts.skips
        if strength == 0.0 or nothing:
            self.ghosts.remove()  # at strength 0: the logits are those of the plain model
            self.freeze()

    def on_batch_start(self, context: TrainingContext) -> bool:
        """Set the ghosts' strength for this step (removing them at ``end``); masks never change."""
        self._apply_schedule()
        return False

    def on_epoch_end(self, epoch: int) -> None:
        """Remove the ghosts when ``end`` falls on this epoch's last step (before it is saved)."""
        self._apply_schedule()

    def on_train_end(self, epochs: int) -> None:
        """Remove ghosts still present (training shorter than ``end``: logged) and freeze."""
        if not self.ghosts.removed:
            logger.warning(
                "training ended before the ToST ghost window (end epoch %.2f > %d epochs): "
                "ghosts removed at strength %.3f, the final model differs from the last evaluated",
                self.config.end,
                epochs,
                self.ghost_strength(self._step),
            )
            self.ghosts.remove()
        self.freeze()

    def label_smoothing(self, num_classes: int, requested: float) -> float:
        """ToST's label smoothing as torch's ``label_smoothing`` (:func:`tost_label_smoothing`).

        Raises:
            UserError: ``requested`` (``--label-smoothing``) is also set.
        """
        alpha = self.config.tost_label_smoothing
        _check_label_smoothing(self.config, requested)
        if alpha == 0.0:
            return requested
        beta = tost_label_smoothing(alpha, num_classes)
        logger.info(
            "tost: label smoothing alpha %g on %d classes (torch's %.6f)", alpha, num_classes, beta
        )
        return beta

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The base state plus whether the ghosts were removed and how the init was rescaled."""
        state = super().state_dict()
        state["tost"] = {
            "ghosts_removed": self.ghosts.removed,
            "mask_seed": self.mask_seed,
            "rescale_factors": dict(self.rescale_factors),
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore masks and step; remove the ghosts if they were removed when it was saved."""
        super().load_state_dict(state)
        if (state.get("tost") or {}).get("ghosts_removed"):
            self.ghosts.remove()
        self._apply_schedule()
