"""Native FGSM (Linf): one gradient per example serves every epsilon."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from attacks.base import Attack, AttackKind, FixedBudgetOutput
from attacks.config import FGSMParams
from attacks.gradients import loss_gradient
from attacks.norms import Norm, clip_to_ball

__all__ = ["NativeFGSM"]


@dataclass(frozen=True, repr=False)
class NativeFGSM(FGSMParams, Attack):
    """Fast gradient sign method: ``x_adv_k = clip_to_ball(x + eps_k · sign(∇x loss))``."""

    name: ClassVar[str] = "fgsm"
    norm: ClassVar[Norm] = Norm.LINF
    kind: ClassVar[AttackKind] = AttackKind.FIXED_BUDGET
    backend: ClassVar[str] = "native"

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> FixedBudgetOutput:
        direction = loss_gradient(model, x, y).sign()  # (n, ...)
        advs = torch.stack(
            [clip_to_ball(x + e * direction, x, e, self.norm) for e in epsilons]
        )  # (K, n, ...)
        return FixedBudgetOutput(adversarials=advs, grad_evals=x.shape[0])
