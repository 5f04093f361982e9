"""Native projected gradient descent (Linf and L2), all epsilons of the grid in one batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from attacks.base import Attack, AttackKind, FixedBudgetOutput
from attacks.config import PGDParams
from attacks.gradients import loss_gradient
from attacks.norms import Norm, clip_to_ball, perturbation_norm

__all__ = ["NativePGD", "NativePGDL2"]


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape((-1,) + (1,) * (like.ndim - 1))  # (M,) -> (M, 1, ..., 1)


def random_start(x: Tensor, eps: Tensor, norm: Norm) -> Tensor:
    """Uniform random point of the eps ball around ``x`` (M, ...), eps (M,); clipped to [0, 1]."""
    if norm is Norm.LINF:
        delta = (torch.rand_like(x) * 2 - 1) * _bcast(eps, x)
    else:
        # Uniform in the L2 ball: Gaussian direction, radius eps · U^(1/d).
        direction = torch.randn_like(x)
        direction = direction / _bcast(perturbation_norm(direction, Norm.L2).clamp_min(1e-12), x)
        d = x[0].numel()
        radius = eps * torch.rand(x.shape[0], dtype=x.dtype, device=x.device) ** (1.0 / d)
        delta = direction * _bcast(radius, x)
    return clip_to_ball(x + delta, x, eps, norm)


class _PGDBase(PGDParams, Attack):
    kind: ClassVar[AttackKind] = AttackKind.FIXED_BUDGET
    backend: ClassVar[str] = "native"

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> FixedBudgetOutput:
        k_eps, n = len(epsilons), x.shape[0]
        # Stack the grid: row k*n + i is example i at eps_k.
        xs = x.repeat((k_eps,) + (1,) * (x.ndim - 1))  # (K*n, ...)
        ys = y.repeat(k_eps)  # (K*n,)
        eps = torch.tensor(epsilons, dtype=x.dtype, device=x.device).repeat_interleave(n)
        step = torch.tensor(
            [self.stepsize(e) for e in epsilons], dtype=x.dtype, device=x.device
        ).repeat_interleave(n)  # (K*n,)
        adv = random_start(xs, eps, self.norm) if self.random_start else xs.clone()
        for _ in range(self.steps):
            grad = loss_gradient(model, adv, ys)  # (K*n, ...)
            if self.norm is Norm.LINF:
                direction = grad.sign()
            else:
                g_norm = perturbation_norm(grad, Norm.L2).clamp_min(1e-12)
                direction = grad / _bcast(g_norm, grad)
            adv = clip_to_ball(adv + _bcast(step, adv) * direction, xs, eps, self.norm)
        advs = adv.reshape(k_eps, n, *x.shape[1:])  # (K, n, ...)
        return FixedBudgetOutput(adversarials=advs, grad_evals=self.steps * k_eps * n)


@dataclass(frozen=True, repr=False)
class NativePGD(_PGDBase):
    """Linf PGD (Madry et al.) with sign steps of ``rel_stepsize · eps``; last iterate per restart."""

    name: ClassVar[str] = "pgd"
    norm: ClassVar[Norm] = Norm.LINF


@dataclass(frozen=True, repr=False)
class NativePGDL2(_PGDBase):
    """L2 PGD with normalized-gradient steps of ``rel_stepsize · eps``; last iterate per restart."""

    name: ClassVar[str] = "pgd-l2"
    norm: ClassVar[Norm] = Norm.L2
