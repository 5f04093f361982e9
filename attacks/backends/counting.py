"""Count example-gradient evaluations made by library code we cannot instrument directly."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attacks.gradients import finite_input_gradient

__all__ = ["GradCounter"]


class GradCounter(nn.Module):
    """Wrap a model and count examples that pass through it with autograd tracking the input.

    Every such forward is followed by one backward in torchattacks and foolbox, so ``count`` is
    the number of example-gradient evaluations. Input gradients pass through
    :func:`attacks.gradients.finite_input_gradient` (NaN / inf entries made finite), so a model with
    non-finite input gradients cannot poison the library's iterates. The wrapper is created in eval mode (a fresh
    ``nn.Module`` starts in train mode, which foolbox would warn about). ``forwards`` counts
    every example that passes through the model, with or without a gradient.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.count = 0
        self.forwards = 0
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.count += x.shape[0]
        self.forwards += x.shape[0]
        # Library attacks get finite input gradients (finite_gradient), like native ones.
        out: Tensor = self.model(finite_input_gradient(x) if x.requires_grad else x)
        return out
