"""Native Carlini–Wagner L2 (minimum-norm, binary search over the constant c)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from attacks.base import Attack, AttackKind, MinimumNormOutput
from attacks.config import CWParams
from attacks.gradients import finite_gradient
from attacks.norms import Norm, perturbation_norm
from attacks.tensors import per_row

__all__ = ["NativeCW"]

_TANH_SHRINK = 0.999999  # keeps atanh finite at pixels that are exactly 0 or 1 (as foolbox does)


def _to_tanh_space(x: Tensor) -> Tensor:
    return torch.atanh((x * 2 - 1).clamp(-1, 1) * _TANH_SHRINK)


def _to_pixels(w: Tensor) -> Tensor:
    return (torch.tanh(w) + 1) / 2


def _margin(logits: Tensor, y: Tensor) -> Tensor:
    """Z_y − max_{i≠y} Z_i per example (N,); negative means misclassified."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], -math.inf)
    return true - others.amax(dim=1)


@dataclass(frozen=True, repr=False)
class NativeCW(CWParams, Attack):
    """C&W L2: minimize ``‖x' − x‖² + c · max(margin + confidence, 0)`` with Adam in tanh space.

    Per example, ``c`` starts at ``initial_const``, grows ×10 until an adversarial is found and is
    then bisected; the smallest-L2 adversarial seen over the whole search is kept.
    """

    name: ClassVar[str] = "cw"
    norm: ClassVar[Norm] = Norm.L2
    kind: ClassVar[AttackKind] = AttackKind.MINIMUM_NORM
    backend: ClassVar[str] = "native"

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> MinimumNormOutput:
        n = x.shape[0]
        w0 = _to_tanh_space(x)  # (n, ...)
        x_rec = _to_pixels(w0)  # what delta = 0 maps to (within 1e-6 of x)
        const = torch.full((n,), float(self.initial_const), dtype=x.dtype, device=x.device)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, math.inf)
        best = x.clone()
        best_norm = torch.full_like(const, math.inf)
        evals = 0

        for _ in range(self.binary_search_steps):
            delta = torch.zeros_like(w0, requires_grad=True)
            optimizer = torch.optim.Adam([delta], lr=self.stepsize)
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            previous = math.inf
            check_every = math.ceil(self.steps / 10)
            for step in range(self.steps):
                x_adv = _to_pixels(w0 + delta)  # (n, ...)
                logits = model(x_adv)
                margin = _margin(logits, y)  # (n,)
                sq_dist = (x_adv - x_rec).flatten(1).square().sum(dim=1)  # (n,)
                loss = (sq_dist + const * (margin + self.confidence).clamp_min(0)).sum()
                optimizer.zero_grad(set_to_none=True)
                (grad,) = torch.autograd.grad(loss, delta)
                delta.grad = finite_gradient(grad)  # NaN/inf entries would poison Adam's state
                optimizer.step()
                evals += n

                with torch.no_grad():
                    is_adv = margin + self.confidence < 0  # (n,) evaluated at x_adv (pre-step)
                    found |= is_adv
                    dist = perturbation_norm(x_adv - x, Norm.L2)
                    better = is_adv & (dist < best_norm)
                    best_norm = torch.where(better, dist, best_norm)
                    best = torch.where(per_row(better, x), x_adv, best)

                if self.abort_early and step % check_every == 0:
                    value = float(loss.detach())
                    if not value <= 0.9999 * previous:
                        break  # no progress over the last tenth of the steps
                    previous = value

            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(torch.isinf(upper), const * 10, (lower + upper) / 2)

        return MinimumNormOutput(
            adversarials=best.clamp(0.0, 1.0), grad_evals=evals, found=torch.isfinite(best_norm)
        )
