"""foolbox 3 adapters via ``foolbox.PyTorchModel(model, bounds=(0, 1))``.

Fixed-budget attacks use foolbox's own ``epsilons=`` API (one call for the whole grid; foolbox
loops over it and runs the attack once per eps). C&W runs once with ``epsilons=None`` and the
template reads every threshold off the raw minimal adversarials.

Quirks:

* foolbox 3.3.4 / eagerpy 0.30 work with numpy 2.x unchanged (checked: no removed numpy aliases
  are used, and the attacks below run); no workaround is needed.
* foolbox only *warns* when the model is in train mode, and eagerpy's gradient calls
  ``loss.backward()``, which fills parameter ``.grad`` unless parameters are frozen: the template's
  ``frozen_eval`` covers both.
* ``L2CarliniWagnerAttack`` returns an all-zero image for examples it never broke; the template
  counts it only if it is actually misclassified (it is then a valid, if large, adversarial).
* foolbox's PGD loss is the summed cross-entropy and its L2 step replaces an all-zero gradient
  by Gaussian noise – same as our native PGD up to that corner case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import foolbox as fb
import torch
from torch import Tensor, nn

from attacks.backends.counting import GradCounter
from attacks.base import Attack, AttackKind, FixedBudgetOutput, MinimumNormOutput
from attacks.config import CWParams, FGSMParams, PGDParams
from attacks.norms import Norm

__all__ = ["FoolboxCW", "FoolboxFGSM", "FoolboxPGD", "FoolboxPGDL2"]


def _fmodel(model: nn.Module, x: Tensor) -> tuple[Any, GradCounter]:
    counter = GradCounter(model)
    return fb.PyTorchModel(counter, bounds=(0.0, 1.0), device=x.device), counter


def _run_grid(
    attack: Any, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
) -> FixedBudgetOutput:
    fmodel, counter = _fmodel(model, x)
    _, clipped, _ = attack(fmodel, x, y, epsilons=epsilons)  # K tensors (n, ...)
    advs = torch.stack([c.detach() for c in clipped])  # (K, n, ...)
    return FixedBudgetOutput(adversarials=advs, grad_evals=counter.count)


def _pgd_kwargs(p: PGDParams) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"steps": p.steps, "random_start": p.random_start}
    if p.abs_stepsize is not None:
        kwargs["abs_stepsize"] = float(p.abs_stepsize)
    else:
        kwargs["rel_stepsize"] = float(p.rel_stepsize)
    return kwargs


@dataclass(frozen=True, repr=False)
class FoolboxFGSM(FGSMParams, Attack):
    """``foolbox.attacks.FGSM`` (``LinfFastGradientAttack``)."""

    name: ClassVar[str] = "fgsm"
    norm: ClassVar[Norm] = Norm.LINF
    kind: ClassVar[AttackKind] = AttackKind.FIXED_BUDGET
    backend: ClassVar[str] = "foolbox"

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> FixedBudgetOutput:
        return _run_grid(fb.attacks.FGSM(random_start=False), model, x, y, epsilons)


@dataclass(frozen=True, repr=False)
class FoolboxPGD(PGDParams, Attack):
    """``foolbox.attacks.LinfPGD``."""

    name: ClassVar[str] = "pgd"
    norm: ClassVar[Norm] = Norm.LINF
    kind: ClassVar[AttackKind] = AttackKind.FIXED_BUDGET
    backend: ClassVar[str] = "foolbox"

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> FixedBudgetOutput:
        return _run_grid(fb.attacks.LinfPGD(**_pgd_kwargs(self)), model, x, y, epsilons)


@dataclass(frozen=True, repr=False)
class FoolboxPGDL2(PGDParams, Attack):
    """``foolbox.attacks.L2PGD``."""

    name: ClassVar[str] = "pgd-l2"
    norm: ClassVar[Norm] = Norm.L2
    kind: ClassVar[AttackKind] = AttackKind.FIXED_BUDGET
    backend: ClassVar[str] = "foolbox"

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> FixedBudgetOutput:
        return _run_grid(fb.attacks.L2PGD(**_pgd_kwargs(self)), model, x, y, epsilons)


@dataclass(frozen=True, repr=False)
class FoolboxCW(CWParams, Attack):
    """``foolbox.attacks.L2CarliniWagnerAttack`` (binary search; minimum-norm)."""

    name: ClassVar[str] = "cw"
    norm: ClassVar[Norm] = Norm.L2
    kind: ClassVar[AttackKind] = AttackKind.MINIMUM_NORM
    backend: ClassVar[str] = "foolbox"

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> MinimumNormOutput:
        attack = fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=self.binary_search_steps,
            steps=self.steps,
            stepsize=self.stepsize,
            confidence=self.confidence,
            initial_const=self.initial_const,
            abort_early=self.abort_early,
        )
        fmodel, counter = _fmodel(model, x)
        raw, _, _ = attack(fmodel, x, y, epsilons=None)  # (n, ...) minimal adversarials
        return MinimumNormOutput(adversarials=raw.detach(), grad_evals=counter.count)
