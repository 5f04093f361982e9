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
    "l1_box_projection",
    "perturbation_norm",
    "verification_tolerance",
    "verify_adversarials",
]


class Norm(str, Enum):
    """Threat-model norm of a perturbation."""

    LINF = "linf"
    L2 = "l2"
    L1 = "l1"


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
    if norm is Norm.L1:
        return flat.abs().sum(dim=1)
    raise ValueError(f"unknown norm {norm!r}")


def l1_box_projection(x: Tensor, delta: Tensor, eps: float | Tensor) -> Tensor:
    """Euclidean projection of ``delta`` onto ``{d : ‖d‖₁ <= eps, x + d ∈ [0, 1]}``, (N, ...).

    The set is the L1 ball intersected with the box (Croce & Hein, "Mind the box: l1-APGD for
    sparse adversarial attacks on image classifiers", ICML 2021, Lemma 1; ``L1_projection`` of
    PyPI ``pyautoattack``). By the KKT conditions the projection is, per coordinate,
    ``sign(δ_i) · clip(|δ_i| − λ, 0, b_i)`` with ``b_i`` the room towards the box
    (``1 − x_i`` for ``δ_i > 0``, else ``x_i``) and one ``λ >= 0`` per example: ``λ = 0`` when the
    box-clipped ``δ`` already fits, else the root of the piecewise-linear, non-increasing
    ``g(λ) = Σ_i clip(|δ_i| − λ, 0, b_i) = eps``, found exactly from the sorted breakpoints
    ``|δ_i| − b_i`` and ``|δ_i|`` (computed in float64). Unlike an L1-ball projection followed by
    a [0, 1] clamp (inside the set, but not its nearest point), the budget is not spent on
    coordinates the box cuts off.

    Args:
        x: centres (N, ...) in [0, 1].
        delta: perturbations (N, ...), any size.
        eps: radius, a float or per-example (N,) tensor, >= 0, in the units of ``x``.
    Returns:
        The projected perturbation (N, ...) in ``x``'s dtype.
    """
    n = x.shape[0]
    v = _flat(delta).double()  # (N, D)
    xf = _flat(x).double()
    e = _per_example(eps, v).reshape(n).double()  # (N,)
    a = v.abs()
    room = torch.where(v > 0, 1.0 - xf, xf).clamp_min(0.0)  # b_i, (N, D)
    lam = torch.zeros(n, dtype=torch.float64, device=x.device)  # (N,)
    over = torch.minimum(a, room).sum(dim=1) > e  # (N,) the box-clipped delta is too long
    if bool(over.any()):
        lam[over] = _l1_threshold(a[over], room[over], e[over])
    proj = v.sign() * (a - lam.unsqueeze(1)).clamp_min(0.0).minimum(room)  # (N, D)
    proj = torch.where(e.unsqueeze(1) > 0, proj, torch.zeros_like(proj))  # eps = 0: exactly x
    return proj.to(delta.dtype).reshape(delta.shape)


def _l1_threshold(a: Tensor, room: Tensor, eps: Tensor) -> Tensor:
    """The ``λ > 0`` with ``Σ_i clip(a_i − λ, 0, room_i) = eps`` per row, (m,); float64 inputs.

    ``g`` loses slope 1 at each ``a_i − room_i`` (coordinate ``i`` leaves its box bound) and
    regains it at ``a_i`` (coordinate ``i`` reaches 0): walk the 2·D sorted breakpoints with
    cumulative sums and interpolate linearly inside the interval where ``g`` crosses ``eps``.
    """
    pts = torch.cat([a - room, a], dim=1)  # (m, 2D)
    sign = torch.cat([torch.ones_like(a), -torch.ones_like(a)], dim=1)
    pts, order = pts.sort(dim=1)
    slope = -sign.gather(1, order).cumsum(dim=1)  # (m, 2D) slope of g right of each point
    # g at the first point is Σ room (every coordinate at its bound); then integrate the slope.
    steps = slope[:, :-1] * (pts[:, 1:] - pts[:, :-1])
    g = torch.cat(
        [room.sum(dim=1, keepdim=True), room.sum(dim=1, keepdim=True) + steps.cumsum(1)], 1
    )
    # First breakpoint where g <= eps; g is non-increasing and reaches 0 < eps at the last one.
    j = (g > eps.unsqueeze(1)).sum(dim=1).clamp(1, pts.shape[1] - 1)  # (m,) index of that point
    rows = torch.arange(a.shape[0], device=a.device)
    g0, p0, s0 = g[rows, j - 1], pts[rows, j - 1], slope[rows, j - 1]
    return (p0 + (g0 - eps) / (-s0).clamp_min(1.0)).clamp_min(0.0)


def clip_to_ball(x_adv: Tensor, x: Tensor, eps: float | Tensor, norm: Norm) -> Tensor:
    """Project ``x_adv`` into the ``eps`` ball around ``x`` and then into ``[0, 1]``.

    ``eps`` is a float or a per-example (N,) tensor. The [0, 1] clamp after the ball projection
    never leaves the ball: ``x`` itself lies in [0, 1], so clamping ``x + delta`` to [0, 1] moves
    every component of ``delta`` towards 0 (``|delta_i|`` can only shrink), which cannot increase
    an L2 or Linf norm. L1 uses the exact projection onto the ball intersected with the box
    (:func:`l1_box_projection`), so the clamp changes nothing there.
    """
    e = _per_example(eps, x)  # (N, 1, ..., 1)
    delta = x_adv - x
    if norm is Norm.LINF:
        delta = torch.maximum(torch.minimum(delta, e), -e)
    elif norm is Norm.L2:
        norms = perturbation_norm(delta, Norm.L2).reshape(e.shape)  # (N, 1, ..., 1)
        factor = torch.clamp(e / norms.clamp_min(1e-12), max=1.0)
        delta = delta * factor
    elif norm is Norm.L1:
        delta = l1_box_projection(x, delta, eps)
    else:
        raise ValueError(f"unknown norm {norm!r}")
    return (x + delta).clamp(0.0, 1.0)


def verification_tolerance(dtype: torch.dtype, norm: Norm, dim: int) -> tuple[float, float]:
    """``(atol, rtol)`` that cover the rounding of a projection computed in ``dtype``.

    ``x + delta`` rounds each of the ``dim`` values by at most one unit in the last place of
    ``[0, 1]`` (``finfo(dtype).eps``), and ``eps`` itself is rounded to ``dtype`` (relative
    ``eps``): Linf gets ``atol = ulp``, L2 ``atol = ulp · sqrt(dim)`` and L1 ``atol = ulp · dim``
    (every value rounded the same way), all ``rtol = ulp``; never below ``1e-6`` (the float32
    slack used before).
    float32 on 1×8×8 inputs: ``(1e-6, 1e-6)``; bfloat16: ``ulp = 2^-7``.
    """
    if not dtype.is_floating_point:
        raise ValueError(f"verification needs a floating dtype, got {dtype}")
    ulp = float(torch.finfo(dtype).eps)
    scale = {Norm.LINF: 1.0, Norm.L2: math.sqrt(max(dim, 1)), Norm.L1: float(max(dim, 1))}
    atol = ulp * scale[norm]
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
