"""Gradient Annealing (GA) and the STR soft threshold: the numerical core of ``autosparse``.

Kundu, Mellempudi, Vooturi, Kaul, Dubey, "AutoSparse: Towards Automated Sparse Training of Deep
Neural Networks" (arXiv 2304.06941, 2023); the soft threshold is STR (Kusupati et al., "Soft
Threshold Weight Reparameterization for Learnable Sparsity", ICML 2020). There is no official
AutoSparse code; the third-party PyTorch version read is cern-nextgen/PQuantML
(``src/pquant/core/torch/pruning_methods/autosparse.py``: ``_AutoSparsePrune``,
``cosine_sigmoid_decay``, ``AutoSparse.post_epoch_function``).

- :class:`AnnealedReLU` / :func:`annealed_relu`: ``ReLU`` forward; backward derivative 1 where
  ``x > 0`` and ``alpha`` where ``x <= 0`` (GA: masked weights keep an alpha-scaled gradient).
- :func:`soft_threshold`: ``W_s = sign(W) · ReLU_GA(|W| - sigmoid(s))`` with exact ``+0.0`` at
  pruned positions.
- :func:`ga_alpha`: ``alpha_t = alpha0 · max(cos_decay(t, T), sig_decay(t, T))``, 0 from the
  reset epoch on. This is PQuantML's torch form (``alpha = alpha0 · decay(t)``, not compounded:
  its older Keras twin multiplied ``alpha <- alpha · decay(t)`` every epoch, which at ``T = 100``
  gives 0.524 instead of 0.714 at epoch 25; the paper describes a non-linear *decay of alpha*,
  and the non-compounded form is the one whose values are a function of the epoch alone).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["AnnealedReLU", "annealed_relu", "ga_alpha", "soft_threshold", "threshold_view"]

#: the sigmoid decay's logit range (PQuantML ``_L0``, ``_L1``)
SIG_L0, SIG_L1 = -6.0, 6.0


class AnnealedReLU(torch.autograd.Function):
    """``ReLU(x)`` whose derivative is ``alpha`` (not 0) where ``x <= 0``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, alpha: float) -> Tensor:
        """``ReLU(x)`` (same shape as ``x``); ``alpha`` is a Python float in ``[0, 1]``."""
        ctx.save_for_backward(x)
        ctx.alpha = float(alpha)
        return torch.relu(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        """``grad · 1`` where ``x > 0``, ``grad · alpha`` where ``x <= 0``; none for ``alpha``."""
        (x,) = ctx.saved_tensors
        slope = torch.where(x > 0, torch.ones_like(x), torch.full_like(x, ctx.alpha))
        return grad * slope, None


def annealed_relu(x: Tensor, alpha: float) -> Tensor:
    """:class:`AnnealedReLU` applied to ``x`` (any shape)."""
    out = AnnealedReLU.apply(x, alpha)
    assert isinstance(out, Tensor)
    return out


def threshold_view(threshold: Tensor, weight: Tensor) -> Tensor:
    """``sigmoid(s)`` shaped to broadcast against ``weight.reshape(K, -1)``.

    ``threshold`` is ``(1, 1)`` (one per layer, STR) or ``(K, 1)`` (one per output channel,
    PQuantML's default); both are 2-D so that weight decay reaches them (optimizers in this
    project exempt 1-D parameters; the sparsifier adds its thresholds to their own group anyway).
    """
    if (
        threshold.ndim != 2
        or threshold.shape[1] != 1
        or threshold.shape[0] not in (1, weight.shape[0])
    ):
        raise ValueError(
            f"threshold shape {tuple(threshold.shape)} does not fit weight {tuple(weight.shape)}"
        )
    return torch.sigmoid(threshold)


def soft_threshold(weight: Tensor, threshold: Tensor, alpha: float) -> Tensor:
    """STR's soft threshold with Gradient Annealing: ``sign(W) · ReLU_GA(|W| - sigmoid(s))``.

    ``weight`` is any ``(K, ...)`` weight (conv ``(K, C, kh, kw)``, linear ``(K, C)``),
    ``threshold`` ``(1, 1)`` or ``(K, 1)`` logits ``s``. Returns a tensor shaped like ``weight``:
    kept weights shrunk by ``sigmoid(s)``, pruned ones exactly ``+0.0`` (never ``-0.0``, so the
    zeros are bit-identical to the masked weights the rest of the project writes).
    Differentiable in ``weight`` and ``threshold``; the ReLU's derivative is ``alpha`` where
    ``|W| <= sigmoid(s)``.
    """
    flat = weight.reshape(weight.shape[0], -1)  # (K, C·kh·kw)
    x = flat.abs() - threshold_view(threshold, weight)
    out = torch.sign(flat) * annealed_relu(x, alpha) + 0.0  # -0.0 + 0.0 == +0.0
    return out.reshape(weight.shape)


def _cos_decay(t: float, horizon: float) -> float:
    return (1.0 + math.cos(math.pi * t / horizon)) / 2.0


def _sig_decay(t: float, horizon: float) -> float:
    z = SIG_L0 + (SIG_L1 - SIG_L0) * t / horizon
    return 1.0 - 1.0 / (1.0 + math.exp(-z))


def ga_alpha(epoch: float, alpha0: float, horizon: float, reset_epoch: float) -> float:
    """GA's ``alpha`` during epoch ``epoch`` (0-based): ``alpha0 · max(cos, sig decay)``.

    ``cos = (1 + cos(pi t / T)) / 2``, ``sig = 1 - sigmoid(-6 + 12 t / T)`` with ``T = horizon``
    (epochs, > 0); 0 from ``reset_epoch`` on (PQuantML's preset: ``alpha0 = 0.75``, ``T = 100``,
    reset at 90). Past ``T`` the decay is held at its value at ``T``.
    """
    if horizon <= 0:
        raise ValueError(f"horizon must be > 0 epochs, got {horizon}")
    if epoch >= reset_epoch - 1e-9:
        return 0.0
    t = min(max(epoch, 0.0), horizon)
    return alpha0 * max(_cos_decay(t, horizon), _sig_decay(t, horizon))
