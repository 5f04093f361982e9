"""``grasp``: pruning at initialization by preserving gradient flow, masks fixed afterwards.

Wang, Zhang, Grosse, "Picking Winning Tickets Before Training by Preserving Gradient Flow",
ICLR 2020 (arXiv 2002.07376).

With ``g = ∇L(θ)`` and the Hessian ``H`` of the loss at initialization, GraSP scores every weight
by ``S(θ) = -θ ⊙ (H g)`` and removes the weights with the *highest* scores (their removal reduces
the gradient norm the least, or increases it), ranked globally across all pruned layers. ``H g`` is
a Hessian-gradient product computed by double backpropagation: ``H g = ∇(gᵀ ∇L)`` with ``g``
held constant (``torch.autograd.grad(..., create_graph=True)``); no Hessian is formed.
The loss is the cross-entropy of ``logits / T`` with the paper's temperature ``T = 200``
(``grasp_temperature``), summed over ``grasp_batches`` training batches.

Differences from the reference code: ``g`` and ``H g`` use the same batches (the reference
splits each batch in halves for ``g``) and batches are not class-balanced; the reference's
normalisation of the scores by ``|Σ S|`` is a positive factor and does not change the ranking.
Scoring runs on a copy of the model in train mode, so the model's BatchNorm statistics are
untouched. A layer can be pruned entirely if its weights all score high (as in the paper).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from robustbench_sparse.sparsity.allocation import kept_count
from robustbench_sparse.sparsity.base import TrainingContext
from robustbench_sparse.sparsity.config import PruningMethod, SparsityConfig
from robustbench_sparse.sparsity.methods._base import PruneAtInitSparsifier

logger = logging.getLogger(__name__)

Batch = tuple[Tensor, Tensor]


def _loss(model: nn.Module, batch: Batch, temperature: float) -> Tensor:
    x, y = batch
    return F.cross_entropy(model(x) / temperature, y)


def hessian_gradient_product(
    model: nn.Module, params: Sequence[Tensor], batches: Sequence[Batch], temperature: float
) -> tuple[list[Tensor], list[Tensor]]:
    """``(g, H g)`` for ``L = Σ_b CE(model(x_b) / T, y_b)`` with respect to ``params``.

    ``g = ∇L``; ``H g = ∇_θ (gᵀ ∇L(θ))`` with ``g`` detached (double backprop).
    """
    grads = [torch.zeros_like(p) for p in params]
    for batch in batches:
        for acc, gb in zip(
            grads, torch.autograd.grad(_loss(model, batch, temperature), params), strict=True
        ):
            acc.add_(gb)
    hg = [torch.zeros_like(p) for p in params]
    for batch in batches:
        dl = torch.autograd.grad(_loss(model, batch, temperature), params, create_graph=True)
        z = sum((g.detach() * d).sum() for g, d in zip(grads, dl, strict=True))
        for acc, h in zip(hg, torch.autograd.grad(z, params), strict=True):  # type: ignore[arg-type]
            acc.add_(h)
    return grads, hg


def grasp_scores(
    model: nn.Module, names: Sequence[str], batches: Sequence[Batch], temperature: float
) -> dict[str, Tensor]:
    """``S = -θ ⊙ (H g)`` for the parameters ``names`` of ``model`` (computed on ``model``)."""
    params = dict(model.named_parameters())
    selected = [params[n] for n in names]
    _, hg = hessian_gradient_product(model, selected, batches, temperature)
    return {n: (-p.detach() * h).detach() for n, p, h in zip(names, selected, hg, strict=True)}


def global_keep_masks(scores: dict[str, Tensor], target: float) -> dict[str, Tensor]:
    """Remove the ``numel - kept_count(numel, 1 - target)`` highest scores, ranked globally.

    Ties resolve deterministically: among equal scores the earlier (layer order, then flat index)
    is removed first.
    """
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1).float() for n in names])  # (N,)
    n_remove = flat.numel() - kept_count(flat.numel(), 1.0 - target)
    order = torch.sort(flat, descending=True, stable=True).indices  # (N,)
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[order[:n_remove]] = False
    out, offset = {}, 0
    for n in names:
        size = scores[n].numel()
        out[n] = keep[offset : offset + size].reshape(scores[n].shape)
        offset += size
    return out


class GraspSparsifier(PruneAtInitSparsifier):
    """GraSP masks computed by :meth:`calibrate` (before the first step) and frozen."""

    def __init__(self, config: SparsityConfig, steps_per_epoch: int) -> None:
        if config.method is not PruningMethod.GRASP:
            raise ValueError(f"GraspSparsifier needs method 'grasp', got {config.method.value!r}")
        super().__init__(config, steps_per_epoch)

    def calibrate(self, model: nn.Module, batches: Iterable[Batch]) -> None:
        """Score the weights on the first ``grasp_batches`` of ``batches`` and freeze the masks.

        ``model`` is the prepared model (its parameters are not changed except by the masks).
        A no-op when already frozen (e.g. the masks were restored from a checkpoint).
        """
        self._require_prepared()
        if self._frozen or not self._layers:
            return
        taken: list[Batch] = []
        for batch in batches:
            taken.append(batch)
            if len(taken) >= self.config.grasp_batches:
                break
        if not taken:
            raise ValueError("GraSP calibration needs at least one batch")
        scorer = copy.deepcopy(model)
        scorer.train()
        scores = grasp_scores(scorer, list(self._layers), taken, self.config.grasp_temperature)
        masks = global_keep_masks(scores, self.config.target)
        for name, mask in masks.items():
            if not bool(mask.any()):
                logger.warning("GraSP pruned layer %s entirely", name)
        self._install({n: m.to(self._layers[n].param.device) for n, m in masks.items()})
        logger.info(
            "GraSP: %d layers scored on %d batch(es), layer densities %s",
            len(masks),
            len(taken),
            ", ".join(f"{float(m.float().mean()):.3f}" for m in masks.values()),
        )

    def on_train_start(self, context: TrainingContext) -> bool:
        """Calibrate on the run's seeded batches unless the masks are already fixed (resume)."""
        if self.frozen:
            return False
        self.calibrate(context.model, context.batches(context.seed))
        return True

    def step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """As :meth:`Sparsifier.step`; GraSP must have been calibrated first."""
        if self._layers and not self._frozen:
            raise RuntimeError("GraspSparsifier.calibrate(model, batches) must run before training")
        super().step(optimizer)
