"""Perturbation norms and the one definition of "within budget".

Every attack (native or library backend) projects with :func:`clip_to_ball`, and every adversarial
example is checked by :func:`verify_adversarials` before it is counted. Nothing else in the package
decides whether a perturbation respects its budget.

Inputs live in pixel space ``[0, 1]``; shapes are ``(N, ...)`` with one example per row.
"""

from __future__ import annotations

import math
from enum import Enum

import torch
from torch import Tensor

__all__ = [
    "Norm",
    "clip_to_ball",
    "perturbation_norm",
    "verification_tolerance",
    "verify_adversarials",
]


class Norm(str, Enum):
    """Threat-model norm of a perturbation."""

    LINF = "linf"
    L2 = "l2"


def _flat(t: Tensor) -> Tensor:
    # Explicit D (not -1): reshape cannot infer -1 for an empty batch (N = 0).
    return t.reshape(t.shape[0], math.prod(t.shape[1:]))  # (N, D)


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


def verification_tolerance(dtype: torch.dtype, norm: Norm, dim: int) -> tuple[float, float]:
    """``(atol, rtol)`` that cover the rounding of a projection computed in ``dtype``.

    ``x + delta`` rounds each of the ``dim`` values by at most one unit in the last place of
    ``[0, 1]`` (``finfo(dtype).eps``), and ``eps`` itself is rounded to ``dtype`` (relative
    ``eps``): Linf gets ``atol = ulp``, L2 ``atol = ulp · sqrt(dim)`` (every value rounded the
    same way), both ``rtol = ulp``; never below ``1e-6`` (the float32 slack used before).
    float32 on 1×8×8 inputs: ``(1e-6, 1e-6)``; bfloat16: ``ulp = 2^-7``.
    """
    if not dtype.is_floating_point:
        raise ValueError(f"verification needs a floating dtype, got {dtype}")
    ulp = float(torch.finfo(dtype).eps)
    atol = ulp if norm is Norm.LINF else ulp * math.sqrt(max(dim, 1))
    return max(1e-6, atol), max(1e-6, ulp)


def verify_adversarials(
    x_adv: Tensor,
    x: Tensor,
    eps: float | Tensor,
    norm: Norm,
    *,
    atol: float | None = None,
    rtol: float | None = None,
) -> Tensor:
    """Bool (N,): ``x_adv`` is finite, inside ``[0, 1]`` and ``‖x_adv − x‖ <= eps·(1 + rtol) + atol``.

    The norm is computed in float64, so the only slack needed is the rounding of the projection
    in the attack's dtype: ``atol`` / ``rtol`` default to :func:`verification_tolerance` of
    ``x_adv.dtype`` (float32: ``1e-6``; float16 / bfloat16 proportionally larger), so an
    adversarial is never rejected just for rounding.
    """
    if x_adv.shape != x.shape:
        raise ValueError(f"shape mismatch: x_adv {tuple(x_adv.shape)} vs x {tuple(x.shape)}")
    if atol is None or rtol is None:
        d_atol, d_rtol = verification_tolerance(x_adv.dtype, norm, x[0].numel() if len(x) else 1)
        atol = d_atol if atol is None else atol
        rtol = d_rtol if rtol is None else rtol
    flat = _flat(x_adv)  # (N, D)
    in_bounds = (torch.isfinite(flat) & (flat >= 0.0) & (flat <= 1.0)).all(dim=1)
    dist = perturbation_norm(x_adv.double() - x.double(), norm)  # (N,)
    e = _per_example(eps, dist.unsqueeze(1)).reshape(-1)  # (N,) float64
    within = dist <= e * (1.0 + rtol) + atol
    return in_bounds & within
