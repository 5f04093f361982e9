"""Count example-gradient evaluations made by library code we cannot instrument directly."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["GradCounter"]


class GradCounter(nn.Module):
    """Wrap a model and count examples that pass through it with autograd tracking the input.

    Every such forward is followed by one backward in torchattacks and foolbox, so ``count`` is
    the number of example-gradient evaluations. The wrapper is created in eval mode (a fresh
    ``nn.Module`` starts in train mode, which foolbox would warn about).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.count = 0
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.count += x.shape[0]
        out: Tensor = self.model(x)
        return out
