"""Native targeted FAB (Fast Adaptive Boundary), Linf and L2, as a minimum-norm attack.

Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack",
ICML 2020 (arXiv 1907.02044); the targeted variant FAB-T is the third stage of AutoAttack
"standard" (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks"). Written from the paper and checked against the
original code as packaged by ``pyautoattack`` (``fab_base.py`` / ``fab_projections.py``) and
adv-lib's ``fab``; the box-constrained hyperplane projection here is our own derivation (one
sorted breakpoint search shared by Linf and L2, see :func:`_hyperplane_box_step`).

One FAB iteration at the current point ``x1`` (the original image is ``x0``), for a target class t:

1. one forward+backward: ``f = z_t − z_y`` and its input gradient ``g`` (the linearized decision
   boundary is the hyperplane ``{z : f + <g, z − x1> = 0}``);
2. the minimal-norm steps ``d1`` from ``x1`` and ``d2`` from ``x0`` onto that hyperplane inside
   the box ``[0, 1]^D``;
3. a biased step ``x1 ← clamp((x1 + η·d1)(1 − α) + (x0 + η·d2)·α, 0, 1)`` with
   ``α = min(‖d1‖ / (‖d1‖ + ‖d2‖), α_max)`` (``η`` overshoots the boundary);
4. one forward: where ``x1`` is misclassified, keep it if it is the smallest so far and pull it
   back towards ``x0``: ``x1 ← x0 + β·(x1 − x0)``.

FAB-T runs this for the ``n_target_classes`` most likely classes other than the true one (ranked
on the clean logits), ``n_iter`` iterations each. AutoAttack runs FAB-T inside an epsilon budget
and stops attacking an example once it is broken within that budget; here every target is run
on every example and the smallest adversarial over all targets is returned (the template then
reads every epsilon off it), so at any epsilon this is at least as strong as the budgeted run
with the same iterations (the iterations do not depend on the budget when ``restarts=1``).
:func:`fab_targeted` also offers the budgeted behaviour (``stop_below``) for cascades.

Work per target and example: ``n_iter`` forward+backward passes (``grad_evals``) plus
``n_iter`` classification forwards.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from attacks.base import Attack, AttackKind, MinimumNormOutput
from attacks.gradients import finite_gradient, input_gradient
from attacks.norms import Norm, perturbation_norm
from attacks.params import check, check_n_target_classes, check_positive_int, check_seed, is_number
from attacks.tensors import generator_or_global, per_row

__all__ = [
    "FABParams",
    "FABRun",
    "FABTParams",
    "NativeFAB",
    "NativeFABL2",
    "NativeFABT",
    "NativeFABTL2",
    "fab_targeted",
    "fab_untargeted",
]

logger = logging.getLogger(__name__)

#: radius of the random start of restarts > 1 when nothing smaller is known (AutoAttack's
#: DEFAULT_EPS_DICT_BY_NORM); the start lies at half of min(best norm so far, this)
RESTART_RADIUS = {Norm.LINF: 0.3, Norm.L2: 1.0}


@dataclass(frozen=True)
class FABParams:
    """FAB parameters; defaults are AutoAttack's (``fab_pt.py``; "standard" runs FAB-T, restarts 1).

    ``restarts > 1`` adds runs (per target for FAB-T) from a random start at half of
    ``min(best norm so far, restart_radius)`` (``restart_radius=None``: 0.3 Linf, 1.0 L2);
    AutoAttack "plus" runs the untargeted FAB with 5 restarts.
    """

    n_iter: int = 100
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9
    restarts: int = 1
    restart_radius: float | None = None
    seed: int | None = 0

    def __post_init__(self) -> None:
        check_positive_int("n_iter", self.n_iter)
        check(
            is_number(self.alpha_max) and 0 <= self.alpha_max <= 1,
            f"alpha_max must be in [0, 1] (got {self.alpha_max!r})",
        )
        check(
            is_number(self.eta) and self.eta >= 1,
            f"eta must be >= 1 (got {self.eta!r})",
        )
        check(
            is_number(self.beta) and 0 < self.beta <= 1,
            f"beta must be in (0, 1] (got {self.beta!r})",
        )
        check_positive_int("restarts", self.restarts)
        check(
            self.restart_radius is None
            or (is_number(self.restart_radius) and self.restart_radius > 0),
            f"restart_radius must be None or > 0 (got {self.restart_radius!r})",
        )
        check_seed(self.seed)

    def nominal_gradients(self) -> int:
        """``restarts`` per example: the grid's nominal count, which has no FAB iterations.

        FAB has no ``steps``; its work is ``n_iter × restarts`` per target (FAB-T) or
        ``n_iter × restarts × classes`` (untargeted, one backward per class), measured in
        :attr:`~attacks.base.AttackResult.grad_evals`.
        """
        return self.restarts

    def nominal_forwards(self) -> int:
        """No progress estimate (0)."""
        return 0


@dataclass(frozen=True)
class FABTParams(FABParams):
    """FAB-T: :class:`FABParams` plus ``n_target_classes`` (capped at ``classes − 1`` at run time)."""

    n_target_classes: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        check_n_target_classes(self.n_target_classes)


@dataclass
class FABRun:
    """Outcome of :func:`fab_targeted` on n examples."""

    adversarials: Tensor  # (n, ...) smallest adversarial found, x where none
    norms: Tensor  # (n,) its norm (inf where none was found)
    grad_evals: int  # example forward+backward passes
    forwards: int  # example classification-only forward passes


def _hyperplane_box_step(t: Tensor, w: Tensor, c: Tensor, norm: Norm) -> Tensor:
    """Smallest step ``d`` (Linf or L2) with ``<w, d> = c`` and ``t + d`` in ``[0, 1]^D``.

    ``t`` (m, D) points in the box, ``w`` (m, D) hyperplane normals, ``c`` (m,) required change.
    Where no such step exists the step to the box corner that changes ``<w, ·>`` the most
    towards ``c`` is returned (as the reference implementation does).

    Derivation (after flipping signs so that ``c >= 0``): coordinate i moves in the direction
    ``sign(w_i)`` and has room ``u_i`` (``1 − t_i`` or ``t_i``). Both problems have solutions of
    the form ``|d_i| = min(θ·k_i, u_i)`` for one scalar ``θ >= 0`` (Linf: ``k_i = 1``, θ is the
    norm; L2 (KKT): ``k_i = |w_i|``), so ``<w, d>(θ) = Σ_{r_i<=θ} |w_i| u_i + θ Σ_{r_i>θ} a_i``
    with breakpoints ``r_i = u_i / k_i`` and slopes ``a_i = |w_i| k_i``: nondecreasing and
    piecewise linear. Sorting the breakpoints, one cumulative sum gives its value at every
    breakpoint; the segment holding ``c`` gives θ in closed form.
    """
    flip = c < 0
    w = torch.where(per_row(flip, w), -w, w)
    c = c.abs()
    a_abs = w.abs()
    room = torch.where(w > 0, 1 - t, t).clamp_min(0)  # (m, D) u_i
    room = torch.where(w == 0, torch.zeros_like(room), room)
    k = torch.ones_like(w) if norm is Norm.LINF else a_abs  # (m, D)
    slope = a_abs * k  # (m, D) a_i
    brk = torch.where(k > 0, room / k.clamp_min(1e-30), torch.zeros_like(room))  # r_i
    brk_sorted, order = brk.sort(dim=1)  # (m, D)
    slope_sorted = slope.gather(1, order)
    value_sorted = (a_abs * room).gather(1, order)  # |w_i| u_i, fixed once saturated
    v_cum = value_sorted.cumsum(dim=1)  # (m, D) Σ_{j<=i} v_j
    s_cum = slope_sorted.cumsum(dim=1)  # (m, D) Σ_{j<=i} a_j
    s_tot = s_cum[:, -1:]  # (m, 1)
    g = v_cum + brk_sorted * (s_tot - s_cum)  # (m, D) <w, d> at θ = r_(i)
    n_below = (g < c[:, None]).sum(dim=1)  # (m,) breakpoints before the solution segment
    feasible = v_cum[:, -1] >= c
    idx = (n_below - 1).clamp_min(0)[:, None]
    v_before = torch.where(n_below > 0, v_cum.gather(1, idx).squeeze(1), torch.zeros_like(c))
    s_before = torch.where(n_below > 0, s_cum.gather(1, idx).squeeze(1), torch.zeros_like(c))
    theta = (c - v_before) / (s_tot.squeeze(1) - s_before).clamp_min(1e-30)
    theta = torch.where(feasible, theta, torch.full_like(theta, math.inf))
    mag = torch.minimum(theta[:, None] * k, room)  # (m, D); k = 0 -> 0 (inf * 0 avoided below)
    mag = torch.where(k > 0, mag, torch.zeros_like(mag))
    return w.sign() * mag


#: (x1 (m, ...)) -> (f (m,), its input gradient (m, ...), example gradients spent); f < 0 on
#: the side of the true class, f = 0 on the (linearized) decision boundary
Boundary = Callable[[Tensor], tuple[Tensor, Tensor, int]]


def _targeted_boundary(model: nn.Module, y: Tensor, target: Tensor) -> Boundary:
    """``f = z_t − z_y`` for a fixed target per row: one forward+backward."""
    rows = torch.arange(y.shape[0], device=y.device)

    def boundary(x1: Tensor) -> tuple[Tensor, Tensor, int]:
        _, diff, grad = input_gradient(model, x1, lambda z: z[rows, target] - z[rows, y])
        return diff, grad, x1.shape[0]

    return boundary


def _closest_boundary(model: nn.Module, y: Tensor, norm: Norm) -> Boundary:
    """Untargeted FAB: of the boundaries ``z_j − z_y`` (j ≠ y) the linearly closest one.

    One forward and one backward per class (the whole Jacobian), counted as ``classes``
    gradient evaluations per example. The distance of boundary j is ``|f_j| / ‖∇f_j‖_*``
    (dual norm: L1 for Linf, L2 for L2).
    """
    rows = torch.arange(y.shape[0], device=y.device)

    def boundary(x1: Tensor) -> tuple[Tensor, Tensor, int]:
        m = x1.shape[0]
        with torch.enable_grad():
            xg = x1.detach().requires_grad_(True)
            logits = model(xg)  # (m, classes)
            k = logits.shape[1]
            grads = torch.stack(
                [
                    torch.autograd.grad(logits[:, j].sum(), xg, retain_graph=j < k - 1)[0]
                    for j in range(k)
                ],
                dim=1,
            )  # (m, classes, ...)
        grads = finite_gradient(grads)
        logits = logits.detach()
        diff = logits - logits[rows, y][:, None]  # (m, classes)
        dgrad = (grads - grads[rows, y][:, None]).reshape(m, k, -1)  # (m, classes, D)
        if norm is Norm.LINF:
            dual = dgrad.abs().sum(dim=2)
        else:
            dual = torch.linalg.vector_norm(dgrad, dim=2)
        dist = diff.abs() / (dual + 1e-12)
        dist[rows, y] = math.inf
        j = dist.argmin(dim=1)  # (m,)
        return diff[rows, j], dgrad[rows, j].reshape(x1.shape), m * k

    return boundary


def _fab_single(
    model: nn.Module,
    x0: Tensor,
    y: Tensor,
    boundary: Boundary,
    start: Tensor,
    *,
    norm: Norm,
    params: FABParams,
) -> tuple[Tensor, Tensor, int, int]:
    """One FAB run of ``n_iter`` iterations on ``x0`` (m, ...) from ``start``.

    Returns the smallest adversarial seen (m, ...), its norm (m,) (inf where none) and the
    gradient-evaluation and forward-only example counts.
    """
    m = x0.shape[0]
    flat0 = x0.reshape(m, -1)  # (m, D)
    x1 = start.clone()
    best = x0.clone()
    best_norm = torch.full((m,), math.inf, dtype=x0.dtype, device=x0.device)
    grad_evals = forwards = 0
    for _ in range(params.n_iter):
        diff, grad, evals = boundary(x1)
        grad_evals += evals
        w = grad.reshape(m, -1)  # (m, D)
        flat1 = x1.reshape(m, -1)
        # The linearized boundary f + <w, z − x1> = 0 seen from x1 and from x0.
        c1 = -diff
        c0 = -diff + (w * (flat1 - flat0)).sum(dim=1)
        steps = _hyperplane_box_step(
            torch.cat((flat1, flat0)), torch.cat((w, w)), torch.cat((c1, c0)), norm
        )  # (2m, D)
        d1, d2 = steps[:m].reshape(x0.shape), steps[m:].reshape(x0.shape)
        a = perturbation_norm(steps, norm).clamp_min(1e-8)  # (2m,)
        alpha = (a[:m] / (a[:m] + a[m:])).clamp(0.0, params.alpha_max)
        alpha = per_row(alpha, x0)
        x1 = ((x1 + params.eta * d1) * (1 - alpha) + (x0 + params.eta * d2) * alpha).clamp(0, 1)

        with torch.no_grad():
            is_adv = model(x1).argmax(dim=1) != y  # (m,)
        forwards += m
        dist = perturbation_norm(x1 - x0, norm)
        better = is_adv & (dist < best_norm)
        best = torch.where(per_row(better, x0), x1, best)
        best_norm = torch.where(better, dist, best_norm)
        x1 = torch.where(per_row(is_adv, x0), x0 + (x1 - x0) * params.beta, x1)
    return best, best_norm, grad_evals, forwards


def _random_start(x0: Tensor, radius: Tensor, norm: Norm, gen: torch.Generator | None) -> Tensor:
    """A random point at distance ``radius`` (m,) from ``x0`` (before clamping to [0, 1])."""
    if norm is Norm.LINF:
        t = torch.rand(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype) * 2 - 1
    else:
        t = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
    t = t / per_row(perturbation_norm(t, norm).clamp_min(1e-12), t)
    return (x0 + per_row(radius, x0) * t).clamp(0, 1)


def fab_targeted(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: Norm,
    params: FABTParams,
    stop_below: Tensor | None = None,
) -> FABRun:
    """FAB-T on correctly classified ``x`` (n, ...) with labels ``y`` (n,): smallest adversarial.

    Targets are the 2nd … (``n_target_classes`` + 1)-th classes of the clean logits, attacked one
    after the other. With ``stop_below`` (n,) an example is no longer attacked (by later targets /
    restarts) once an adversarial of norm ``<= stop_below`` is known: AutoAttack's budgeted FAB-T
    at that budget. Randomness (restarts > 1 only) comes from a generator seeded with ``params.seed``.
    """
    n = x.shape[0]
    if n == 0:
        return FABRun(x.clone(), torch.zeros(0, dtype=x.dtype, device=x.device), 0, 0)
    with torch.no_grad():
        logits = model(x)
    n_targets = min(params.n_target_classes, logits.shape[1] - 1)
    if n_targets < params.n_target_classes:
        logger.info(
            "fab-t: %d classes, attacking %d target classes instead of %d",
            logits.shape[1],
            n_targets,
            params.n_target_classes,
        )
    ranked = logits.argsort(dim=1, descending=True)  # (n, classes)

    def target_round(rank: int) -> Callable[[Tensor], Boundary]:
        return lambda idx: _targeted_boundary(model, y[idx], ranked[idx, rank])

    rounds = [target_round(rank) for rank in range(1, n_targets + 1)]
    run = _fab_rounds(model, x, y, rounds, norm=norm, params=params, stop_below=stop_below)
    return FABRun(run.adversarials, run.norms, run.grad_evals, run.forwards + n)


def fab_untargeted(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: Norm,
    params: FABParams,
    stop_below: Tensor | None = None,
) -> FABRun:
    """Untargeted FAB (closest linearized boundary each step) on ``x`` (n, ...); see :func:`fab_targeted`."""
    rounds = [lambda idx: _closest_boundary(model, y[idx], norm)]
    return _fab_rounds(model, x, y, rounds, norm=norm, params=params, stop_below=stop_below)


def _fab_rounds(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    rounds: list[Callable[[Tensor], Boundary]],
    *,
    norm: Norm,
    params: FABParams,
    stop_below: Tensor | None,
) -> FABRun:
    """Run FAB once per round (target) and restart; keep the smallest adversarial per example."""
    n = x.shape[0]
    best = x.clone()
    best_norm = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
    gen = generator_or_global(params.seed, x.device)
    radius_cap = params.restart_radius or RESTART_RADIUS[norm]
    grad_evals = forwards = 0
    for make_boundary in rounds:
        for restart in range(params.restarts):
            todo = torch.ones(n, dtype=torch.bool, device=x.device)
            if stop_below is not None:
                todo = best_norm > stop_below
            idx = todo.nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            xs = x[idx]
            if restart == 0:
                start = xs
            else:
                radius = 0.5 * best_norm[idx].clamp(max=radius_cap)
                start = _random_start(xs, radius, norm, gen)
            adv, adv_norm, ge, fw = _fab_single(
                model, xs, y[idx], make_boundary(idx), start, norm=norm, params=params
            )
            grad_evals += ge
            forwards += fw
            better = adv_norm < best_norm[idx]
            best[idx[better]] = adv[better]
            best_norm[idx[better]] = adv_norm[better]
    return FABRun(best, best_norm, grad_evals, forwards)


class _FABBase(Attack):
    kind: ClassVar[AttackKind] = AttackKind.MINIMUM_NORM
    backend: ClassVar[str] = "native"

    def _fab(self, model: nn.Module, x: Tensor, y: Tensor) -> FABRun:
        raise NotImplementedError

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> MinimumNormOutput:
        run = self._fab(model, x, y)
        return MinimumNormOutput(
            adversarials=run.adversarials,
            grad_evals=run.grad_evals,
            found=torch.isfinite(run.norms),
        )


class _FABTBase(FABTParams, _FABBase):
    def _fab(self, model: nn.Module, x: Tensor, y: Tensor) -> FABRun:
        return fab_targeted(model, x, y, norm=self.norm, params=self)


class _FABUntargetedBase(FABParams, _FABBase):
    def _fab(self, model: nn.Module, x: Tensor, y: Tensor) -> FABRun:
        return fab_untargeted(model, x, y, norm=self.norm, params=self)


@dataclass(frozen=True, repr=False)
class NativeFABT(_FABTBase):
    """Targeted FAB, Linf, minimum norm (AutoAttack's FAB-T run once for every epsilon)."""

    name: ClassVar[str] = "fab-t"
    norm: ClassVar[Norm] = Norm.LINF


@dataclass(frozen=True, repr=False)
class NativeFABTL2(_FABTBase):
    """Targeted FAB, L2, minimum norm (AutoAttack's FAB-T run once for every epsilon)."""

    name: ClassVar[str] = "fab-t-l2"
    norm: ClassVar[Norm] = Norm.L2


@dataclass(frozen=True, repr=False)
class NativeFAB(_FABUntargetedBase):
    """Untargeted FAB, Linf, minimum norm (AutoAttack "plus" runs it with restarts=5)."""

    name: ClassVar[str] = "fab"
    norm: ClassVar[Norm] = Norm.LINF


@dataclass(frozen=True, repr=False)
class NativeFABL2(_FABUntargetedBase):
    """Untargeted FAB, L2, minimum norm (AutoAttack "plus" runs it with restarts=5)."""

    name: ClassVar[str] = "fab-l2"
    norm: ClassVar[Norm] = Norm.L2
