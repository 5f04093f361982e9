"""torchattacks 3.5.1 adapters: the plain library way, one attack object per epsilon.

Quirks handled or documented here:

* torchattacks binds ``eps`` at construction, so fixed-budget attacks build one object per eps.
* ``Attack.__call__`` calls ``model.eval()`` (``set_model_training_mode`` defaults) and only
  switches back to train mode if the model was training; our template already runs under
  ``frozen_eval``, so the model stays in eval with frozen parameters either way.
* Its ``CW`` calls ``loss.backward()``: frozen parameters keep it from filling parameter ``.grad``.
* Inputs are silently clamped to [0, 1]; our template rejects out-of-range inputs before.
* ``CW`` has a fixed ``c`` and no binary search – a different attack from C&W with search, hence
  the name ``cw-fixed-c``. It starts from ``atanh(2x − 1)``, which is ±inf at pixels that are
  exactly 0 or 1, so such pixels never move (many in digits/MNIST backgrounds), and its
  ``max((1 − onehot) · logits)`` treats the other-class maximum as ≥ 0. Both are left as the
  library does them; the result is verified and read off like a minimum-norm attack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torchattacks
from torch import Tensor, nn

from attacks.backends.counting import GradCounter
from attacks.base import Attack, AttackKind, FixedBudgetOutput, MinimumNormOutput
from attacks.config import CWFixedCParams, FGSMParams, PGDParams
from attacks.norms import Norm

__all__ = ["TorchattacksCWFixedC", "TorchattacksFGSM", "TorchattacksPGD", "TorchattacksPGDL2"]


def _run_per_eps(
    make: Any, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
) -> FixedBudgetOutput:
    counter = GradCounter(model)
    advs = []
    for e in epsilons:
        attack = make(counter, e)
        advs.append(attack(x, y).detach())
    return FixedBudgetOutput(adversarials=torch.stack(advs), grad_evals=counter.count)


@dataclass(frozen=True, repr=False)
class TorchattacksFGSM(FGSMParams, Attack):
    """``torchattacks.FGSM`` (Linf)."""

    name: ClassVar[str] = "fgsm"
    norm: ClassVar[Norm] = Norm.LINF
    kind: ClassVar[AttackKind] = AttackKind.FIXED_BUDGET
    backend: ClassVar[str] = "torchattacks"

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> FixedBudgetOutput:
        return _run_per_eps(lambda m, e: torchattacks.FGSM(m, eps=e), model, x, y, epsilons)


class _TorchattacksPGDBase(PGDParams, Attack):
    """One library PGD object per epsilon with ``alpha = stepsize(eps)``; subclasses pick the class."""

    kind: ClassVar[AttackKind] = AttackKind.FIXED_BUDGET
    backend: ClassVar[str] = "torchattacks"
    library_class: ClassVar[Callable[..., Any]]

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> FixedBudgetOutput:
        return _run_per_eps(
            lambda m, e: type(self).library_class(
                m, eps=e, alpha=self.stepsize(e), steps=self.steps, random_start=self.random_start
            ),
            model,
            x,
            y,
            epsilons,
        )


@dataclass(frozen=True, repr=False)
class TorchattacksPGD(_TorchattacksPGDBase):
    """``torchattacks.PGD`` (Linf) with ``alpha = stepsize(eps)``."""

    name: ClassVar[str] = "pgd"
    norm: ClassVar[Norm] = Norm.LINF
    library_class: ClassVar[Callable[..., Any]] = torchattacks.PGD


@dataclass(frozen=True, repr=False)
class TorchattacksPGDL2(_TorchattacksPGDBase):
    """``torchattacks.PGDL2`` with ``alpha = stepsize(eps)``."""

    name: ClassVar[str] = "pgd-l2"
    norm: ClassVar[Norm] = Norm.L2
    library_class: ClassVar[Callable[..., Any]] = torchattacks.PGDL2


@dataclass(frozen=True, repr=False)
class TorchattacksCWFixedC(CWFixedCParams, Attack):
    """``torchattacks.CW``: one C&W L2 run with fixed ``c``, read off like a minimum-norm attack."""

    name: ClassVar[str] = "cw-fixed-c"
    norm: ClassVar[Norm] = Norm.L2
    kind: ClassVar[AttackKind] = AttackKind.MINIMUM_NORM
    backend: ClassVar[str] = "torchattacks"

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> MinimumNormOutput:
        counter = GradCounter(model)
        attack = torchattacks.CW(
            counter, c=self.c, kappa=self.confidence, steps=self.steps, lr=self.stepsize
        )
        adv = attack(x, y).detach()
        # Examples it never broke come back as x; the template decides success by prediction.
        return MinimumNormOutput(adversarials=adv, grad_evals=counter.count)
