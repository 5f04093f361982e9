"""Input gradients of the classification loss, shared by the native attacks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["loss_gradient"]


def loss_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Gradient of the summed cross-entropy wrt the input ``x`` (N, ...) -> (N, ...).

    Sum reduction keeps every example's gradient independent of the batch size. Only the input
    gets a gradient (``torch.autograd.grad``), so no parameter ``.grad`` is ever written.
    """
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xg), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xg)
    return grad.detach()
