"""Input gradients of the classification loss, shared by the native attacks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["finite_gradient", "finite_input_gradient", "loss_gradient"]


def finite_gradient(grad: Tensor) -> Tensor:
    """``grad`` (N, ...) with every NaN / ±inf entry set to 0; finite entries unchanged.

    Models with ``sqrt`` / ``log`` / division on their input have infinite or NaN input gradients
    at some pixels (e.g. ``d sqrt(x) / dx`` at ``x = 0``). One such entry would turn an L2 step
    ``g / ‖g‖`` (or an Adam state) into NaN for the whole example and every later iterate; zeroing
    the entry keeps the step of that example finite (that pixel just does not move on this step)
    and never touches other entries or other examples. Every gradient-based attack should pass its
    input gradients through this helper (the native engine and FGSM do).
    """
    return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


class _FiniteInputGradient(torch.autograd.Function):
    """Identity forward; the backward zeroes NaN / inf entries of the incoming gradient."""

    @staticmethod
    def forward(ctx: object, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        return finite_gradient(grad)


def finite_input_gradient(x: Tensor) -> Tensor:
    """``x`` unchanged, but any gradient flowing back into ``x`` goes through :func:`finite_gradient`.

    For attack code we cannot edit (torchattacks, foolbox, pyautoattack): the backend adapters feed
    the model ``model(finite_input_gradient(x))`` (:class:`attacks.backends.GradCounter` does), so
    the library receives finite input gradients and its iterates stay finite.
    """
    out: Tensor = _FiniteInputGradient.apply(x)
    return out


def loss_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Gradient of the summed cross-entropy wrt the input ``x`` (N, ...) -> (N, ...).

    Sum reduction keeps every example's gradient independent of the batch size. Only the input
    gets a gradient (``torch.autograd.grad``), so no parameter ``.grad`` is ever written.
    Non-finite entries are zeroed (:func:`finite_gradient`).
    """
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xg), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xg)
    return finite_gradient(grad.detach())
