"""Perturbation norms and the one definition of "within budget".

Every attack (native or library backend) projects with :func:`clip_to_ball`, and every adversarial
example is checked by :func:`verify_adversarials` before it is counted. Nothing else in the package
decides whether a perturbation respects its budget.

Inputs live in pixel space ``[0, 1]``; shapes are ``(N, ...)`` with one example per row.
"""

from __future__ import annotations

from enum import Enum

import torch
from torch import Tensor

__all__ = ["Norm", "clip_to_ball", "perturbation_norm", "verify_adversarials"]


class Norm(str, Enum):
    """Threat-model norm of a perturbation."""

    LINF = "linf"
    L2 = "l2"


def _flat(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1)  # (N, D)


def _per_example(eps: float | Tensor, like: Tensor) -> Tensor:
    """Return ``eps`` as an (N, 1, ..., 1) tensor broadcastable against ``like`` (N, ...)."""
    n = like.shape[0]
    e = torch.as_tensor(eps, dtype=like.dtype, device=like.device)
    if e.ndim == 0:
        e = e.expand(n)
    if e.shape != (n,):
        raise ValueError(f"eps must be a scalar or have shape ({n},), got {tuple(e.shape)}")
    return e.reshape((n,) + (1,) * (like.ndim - 1))


def perturbation_norm(delta: Tensor, norm: Norm) -> Tensor:
    """Per-example norm of ``delta`` (N, ...) -> (N,)."""
    flat = _flat(delta)  # (N, D)
    if flat.shape[1] == 0:
        return flat.new_zeros(flat.shape[0])
    if norm is Norm.LINF:
        return flat.abs().amax(dim=1)
    if norm is Norm.L2:
        return torch.linalg.vector_norm(flat, ord=2, dim=1)
    raise ValueError(f"unknown norm {norm!r}")


def clip_to_ball(x_adv: Tensor, x: Tensor, eps: float | Tensor, norm: Norm) -> Tensor:
    """Project ``x_adv`` into the ``eps`` ball around ``x`` and then into ``[0, 1]``.

    ``eps`` is a float or a per-example (N,) tensor. The [0, 1] clamp after the ball projection
    never leaves the ball: ``x`` itself lies in [0, 1], so clamping ``x + delta`` to [0, 1] moves
    every component of ``delta`` towards 0 (``|delta_i|`` can only shrink), which cannot increase
    an L2 or Linf norm.
    """
    e = _per_example(eps, x)  # (N, 1, ..., 1)
    delta = x_adv - x
    if norm is Norm.LINF:
        delta = torch.maximum(torch.minimum(delta, e), -e)
    elif norm is Norm.L2:
        norms = perturbation_norm(delta, Norm.L2).reshape(e.shape)  # (N, 1, ..., 1)
        factor = torch.clamp(e / norms.clamp_min(1e-12), max=1.0)
        delta = delta * factor
    else:
        raise ValueError(f"unknown norm {norm!r}")
    return (x + delta).clamp(0.0, 1.0)


def verify_adversarials(
    x_adv: Tensor,
    x: Tensor,
    eps: float | Tensor,
    norm: Norm,
    *,
    atol: float = 1e-6,
    rtol: float = 1e-6,
) -> Tensor:
    """Bool (N,): ``x_adv`` is finite, inside ``[0, 1]`` and ``‖x_adv − x‖ <= eps·(1 + rtol) + atol``.

    The norm is computed in float64 so that the only slack is the float32 rounding of the
    projection itself (``atol`` for Linf additions, ``rtol`` for the L2 rescaling).
    """
    if x_adv.shape != x.shape:
        raise ValueError(f"shape mismatch: x_adv {tuple(x_adv.shape)} vs x {tuple(x.shape)}")
    flat = _flat(x_adv)  # (N, D)
    in_bounds = (torch.isfinite(flat) & (flat >= 0.0) & (flat <= 1.0)).all(dim=1)
    dist = perturbation_norm(x_adv.double() - x.double(), norm)  # (N,)
    e = _per_example(eps, dist.unsqueeze(1)).reshape(-1)  # (N,) float64
    within = dist <= e * (1.0 + rtol) + atol
    return in_bounds & within
