"""adv-lib 0.2.8 adapters (Jérôme Rony's Adversarial Library, PyPI ``adv-lib``): the plain way a user runs it.

* ``apgd-ce``, ``apgd-dlr``, ``apgd-t`` (+ ``-l2``): ``adv_lib.attacks.apgd`` /
  ``apgd_targeted`` (Croce & Hein 2020; same step-size schedule, checkpoints, momentum and
  restarts as AutoAttack's APGD), one call per epsilon, ``n_iter = steps``,
  ``n_restarts = restarts``, ``loss_function`` ``"ce"`` / ``"dlr"`` (targeted: ``"dlr"``, the
  most likely ``n_target_classes`` other classes).
* ``fmn`` (+ ``-l2``): ``adv_lib.attacks.fmn`` (Pintor et al. 2021), minimum norm, the native
  :class:`~attacks.fmn.FMNParams` mapped one to one (``steps``, ``α_init``, ``α_final``,
  ``γ_init``, ``γ_final``); ``box_aware`` must stay False here (the native default is True).
* ``fab-t`` (+ ``-l2``) and ``fab`` (+ ``-l2``): ``adv_lib.attacks.fab`` (Croce & Hein 2020),
  minimum norm; FAB-T is adv-lib's ``targeted_restarts=True`` mode with
  ``restarts = n_target_classes · restarts`` (the most likely classes first; beyond the number of
  classes, random restarts). ``restart_radius`` is adv-lib's ``ε`` (random-start radius).
* ``ddn`` (L2 only, adv-lib only): Decoupled Direction and Norm (Rony et al., CVPR 2019),
  minimum norm; ``levels`` quantizes the perturbation to that many grey levels (``None``: off).

Quirks handled or documented here:

* Importing ``adv_lib`` imports ``visdom`` (for its optional loggers) and ``distutils``; the
  module fails with a one-line :class:`~attacks.base.AttackConfigError` naming the install
  commands when either is missing.
* Random starts (APGD, FAB restarts) come from torch's global RNG: the
  :class:`~attacks.base.Attack` template seeds it with ``seed`` inside a forked RNG, so the
  caller's RNG state is unchanged afterwards. ``seed`` must therefore be an int here.
* Work is counted with :class:`~attacks.backends.counting.GradCounter`: ``grad_evals`` counts
  examples forwarded with a gradient-tracked input. adv-lib's FAB computes the whole Jacobian
  after one such forward (untargeted: one backward per class), which counts once per example.
  ``details["forward_evals"]`` (fixed-budget attacks) counts every example forwarded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from attacks.backends.common import per_eps, target_count
from attacks.backends.counting import GradCounter
from attacks.base import (
    Attack,
    AttackConfigError,
    AttackKind,
    FixedBudgetOutput,
    MinimumNormOutput,
)
from attacks.contracts import DLR_HINT, TARGETED_DLR_HINT
from attacks.fab import FABParams, FABTParams
from attacks.fmn import FMNParams
from attacks.norms import Norm
from attacks.params import (
    check,
    check_apgd,
    check_int_seed,
    check_n_target_classes,
    check_positive_int,
    is_int,
    is_number,
)

try:
    from adv_lib.attacks import apgd, apgd_targeted, ddn, fab, fmn
except ImportError as err:  # pragma: no cover - depends on the environment
    raise AttackConfigError(
        f"backend 'adv-lib' needs the adv-lib package ({err}); install it with "
        '`pip install "setuptools<81" && pip install --no-build-isolation visdom && '
        "pip install --no-deps adv-lib`"
    ) from None

__all__ = [
    "AdvlibAPGDCE",
    "AdvlibAPGDCEL2",
    "AdvlibAPGDDLR",
    "AdvlibAPGDDLRL2",
    "AdvlibAPGDT",
    "AdvlibAPGDTL2",
    "AdvlibDDN",
    "AdvlibFAB",
    "AdvlibFABL2",
    "AdvlibFABT",
    "AdvlibFABTL2",
    "AdvlibFMN",
    "AdvlibFMNL2",
]

#: adv-lib's ``norm`` argument
_P = {Norm.LINF: math.inf, Norm.L2: 2.0}
#: FAB random-start radius when ``restart_radius`` is None (as the native FAB)
_FAB_RADIUS = {Norm.LINF: 0.3, Norm.L2: 1.0}


def _min_norm(run: Callable[[nn.Module], Tensor], model: nn.Module) -> MinimumNormOutput:
    """Run ``run(counted_model)`` -> (n, ...) once; success is decided by the template."""
    counter = GradCounter(model)
    adv = run(counter).detach()
    return MinimumNormOutput(adversarials=adv.clamp(0.0, 1.0), grad_evals=counter.count)


# -- APGD --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdvlibAPGDParams:
    """APGD parameters shared with the native and autoattack backends (no ``nested`` here)."""

    steps: int = 100
    restarts: int = 1
    rho: float = 0.75
    seed: int | None = 0

    def __post_init__(self) -> None:
        check_apgd(self.steps, self.restarts, self.rho)
        check_int_seed(self.seed, "adv-lib")

    def nominal_gradients(self) -> int:
        """``steps × restarts`` per example and epsilon: the grid's nominal count.

        It leaves out the start point's gradient and the targets of APGD-T; the budget without
        early stop is ``(steps + 1) × restarts × targets`` (native ``grad_budget_per_example``).
        """
        return self.steps * self.restarts

    def nominal_forwards(self) -> int:
        """``steps × restarts`` model calls per batch; 0 for a single step."""
        return self.nominal_gradients() if self.steps > 1 else 0


class _APGDBase(AdvlibAPGDParams, Attack):
    kind: ClassVar[AttackKind] = AttackKind.FIXED_BUDGET
    backend: ClassVar[str] = "adv-lib"
    loss_function: ClassVar[str]

    restarts_in_run: ClassVar[bool] = True  # adv-lib restarts on its own (n_restarts)

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> FixedBudgetOutput:
        def perturb(m: nn.Module, e: float) -> Tensor:
            out: Tensor = apgd(
                m,
                x,
                y,
                eps=e,
                norm=_P[self.norm],
                n_iter=self.steps,
                n_restarts=self.restarts,
                loss_function=self.loss_function,
                rho=self.rho,
            )
            return out

        return per_eps(perturb, model, epsilons)


@dataclass(frozen=True, repr=False)
class AdvlibAPGDCE(_APGDBase):
    """adv-lib ``apgd`` with the cross-entropy loss, Linf, one call per epsilon."""

    name: ClassVar[str] = "apgd-ce"
    norm: ClassVar[Norm] = Norm.LINF
    loss_function: ClassVar[str] = "ce"


@dataclass(frozen=True, repr=False)
class AdvlibAPGDCEL2(_APGDBase):
    """adv-lib ``apgd`` with the cross-entropy loss, L2, one call per epsilon."""

    name: ClassVar[str] = "apgd-ce-l2"
    norm: ClassVar[Norm] = Norm.L2
    loss_function: ClassVar[str] = "ce"


@dataclass(frozen=True, repr=False)
class AdvlibAPGDDLR(_APGDBase):
    """adv-lib ``apgd`` with the DLR loss, Linf, one call per epsilon."""

    name: ClassVar[str] = "apgd-dlr"
    norm: ClassVar[Norm] = Norm.LINF
    loss_function: ClassVar[str] = "dlr"
    min_classes: ClassVar[int] = 3
    few_classes_hint: ClassVar[str] = DLR_HINT


@dataclass(frozen=True, repr=False)
class AdvlibAPGDDLRL2(_APGDBase):
    """adv-lib ``apgd`` with the DLR loss, L2, one call per epsilon."""

    name: ClassVar[str] = "apgd-dlr-l2"
    norm: ClassVar[Norm] = Norm.L2
    loss_function: ClassVar[str] = "dlr"
    min_classes: ClassVar[int] = 3
    few_classes_hint: ClassVar[str] = DLR_HINT


@dataclass(frozen=True)
class AdvlibAPGDTParams(AdvlibAPGDParams):
    """APGD-T: :class:`AdvlibAPGDParams` plus ``n_target_classes``."""

    n_target_classes: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        check_n_target_classes(self.n_target_classes)


class _APGDTBase(AdvlibAPGDTParams, Attack):
    kind: ClassVar[AttackKind] = AttackKind.FIXED_BUDGET
    backend: ClassVar[str] = "adv-lib"
    min_classes: ClassVar[int] = 4
    few_classes_hint: ClassVar[str] = TARGETED_DLR_HINT

    restarts_in_run: ClassVar[bool] = True  # adv-lib restarts on its own (n_restarts)

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> FixedBudgetOutput:
        targets = target_count(model, x, self.n_target_classes)

        def perturb(m: nn.Module, e: float) -> Tensor:
            out: Tensor = apgd_targeted(
                m,
                x,
                y,
                eps=e,
                norm=_P[self.norm],
                n_iter=self.steps,
                n_restarts=self.restarts,
                loss_function="dlr",
                rho=self.rho,
                num_targets=targets,
            )
            return out

        return per_eps(perturb, model, epsilons)


@dataclass(frozen=True, repr=False)
class AdvlibAPGDT(_APGDTBase):
    """adv-lib ``apgd_targeted`` (DLR-targeted), Linf, one call per epsilon."""

    name: ClassVar[str] = "apgd-t"
    norm: ClassVar[Norm] = Norm.LINF


@dataclass(frozen=True, repr=False)
class AdvlibAPGDTL2(_APGDTBase):
    """adv-lib ``apgd_targeted`` (DLR-targeted), L2, one call per epsilon."""

    name: ClassVar[str] = "apgd-t-l2"
    norm: ClassVar[Norm] = Norm.L2


# -- FMN ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdvlibFMNParams(FMNParams):
    """:class:`~attacks.fmn.FMNParams`; adv-lib implements the published rule only (``box_aware=False``)."""

    box_aware: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.box_aware is False,
            "box_aware=True is native-only; adv-lib's fmn is the published algorithm (box_aware=False)",
        )


class _FMNBase(AdvlibFMNParams, Attack):
    kind: ClassVar[AttackKind] = AttackKind.MINIMUM_NORM
    backend: ClassVar[str] = "adv-lib"

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> MinimumNormOutput:
        alpha_init, alpha_final = self.alphas()

        def run(m: nn.Module) -> Tensor:
            out: Tensor = fmn(
                m,
                x,
                y,
                norm=_P[self.norm],
                steps=self.steps,
                α_init=alpha_init,
                α_final=alpha_final,
                γ_init=self.gamma_init,
                γ_final=self.gamma_final,
            )
            return out

        return _min_norm(run, model)


@dataclass(frozen=True, repr=False)
class AdvlibFMN(_FMNBase):
    """adv-lib ``fmn``, Linf, minimum norm."""

    name: ClassVar[str] = "fmn"
    norm: ClassVar[Norm] = Norm.LINF


@dataclass(frozen=True, repr=False)
class AdvlibFMNL2(_FMNBase):
    """adv-lib ``fmn``, L2, minimum norm."""

    name: ClassVar[str] = "fmn-l2"
    norm: ClassVar[Norm] = Norm.L2


# -- FAB ---------------------------------------------------------------------------------------


def _fab_call(
    attack: FABParams,
    norm: Norm,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    restarts: int,
    targeted: bool,
) -> Tensor:
    out: Tensor = fab(
        model,
        x,
        y,
        norm=_P[norm],
        n_iter=attack.n_iter,
        ε=attack.restart_radius or _FAB_RADIUS[norm],
        α_max=attack.alpha_max,
        β=attack.beta,
        η=attack.eta,
        restarts=restarts,
        targeted_restarts=targeted,
    )
    return out


class _FABTBase(FABTParams, Attack):
    kind: ClassVar[AttackKind] = AttackKind.MINIMUM_NORM
    backend: ClassVar[str] = "adv-lib"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int_seed(self.seed, "adv-lib")

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> MinimumNormOutput:
        targets = target_count(model, x, self.n_target_classes)
        return _min_norm(
            lambda m: _fab_call(self, self.norm, m, x, y, targets * self.restarts, True), model
        )


class _FABBase(FABParams, Attack):
    kind: ClassVar[AttackKind] = AttackKind.MINIMUM_NORM
    backend: ClassVar[str] = "adv-lib"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int_seed(self.seed, "adv-lib")

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> MinimumNormOutput:
        return _min_norm(lambda m: _fab_call(self, self.norm, m, x, y, self.restarts, False), model)


@dataclass(frozen=True, repr=False)
class AdvlibFABT(_FABTBase):
    """adv-lib ``fab`` with ``targeted_restarts=True`` (FAB-T), Linf, minimum norm."""

    name: ClassVar[str] = "fab-t"
    norm: ClassVar[Norm] = Norm.LINF


@dataclass(frozen=True, repr=False)
class AdvlibFABTL2(_FABTBase):
    """adv-lib ``fab`` with ``targeted_restarts=True`` (FAB-T), L2, minimum norm."""

    name: ClassVar[str] = "fab-t-l2"
    norm: ClassVar[Norm] = Norm.L2


@dataclass(frozen=True, repr=False)
class AdvlibFAB(_FABBase):
    """adv-lib ``fab`` (untargeted), Linf, minimum norm."""

    name: ClassVar[str] = "fab"
    norm: ClassVar[Norm] = Norm.LINF


@dataclass(frozen=True, repr=False)
class AdvlibFABL2(_FABBase):
    """adv-lib ``fab`` (untargeted), L2, minimum norm."""

    name: ClassVar[str] = "fab-l2"
    norm: ClassVar[Norm] = Norm.L2


# -- DDN ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DDNParams:
    """DDN (Rony et al., CVPR 2019) with adv-lib's defaults."""

    steps: int = 100
    gamma: float = 0.05
    init_norm: float = 1.0
    levels: int | None = 256

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps)
        check(
            is_number(self.gamma) and 0 < self.gamma < 1,
            f"gamma must be in (0, 1) (got {self.gamma!r})",
        )
        check(
            is_number(self.init_norm) and self.init_norm > 0,
            f"init_norm must be > 0 (got {self.init_norm!r})",
        )
        check(
            self.levels is None or (is_int(self.levels) and self.levels >= 2),
            f"levels must be None or an int >= 2 (got {self.levels!r})",
        )

    def nominal_gradients(self) -> int:
        """``steps`` per example (one run serves every epsilon)."""
        return self.steps

    def nominal_forwards(self) -> int:
        """``steps`` model calls per batch; 0 for a single step."""
        return self.steps if self.steps > 1 else 0


@dataclass(frozen=True, repr=False)
class AdvlibDDN(DDNParams, Attack):
    """adv-lib ``ddn``: Decoupled Direction and Norm, L2, minimum norm."""

    name: ClassVar[str] = "ddn"
    norm: ClassVar[Norm] = Norm.L2
    kind: ClassVar[AttackKind] = AttackKind.MINIMUM_NORM
    backend: ClassVar[str] = "adv-lib"

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> MinimumNormOutput:
        def run(m: nn.Module) -> Tensor:
            out: Tensor = ddn(
                m,
                x,
                y,
                steps=self.steps,
                γ=self.gamma,
                init_norm=self.init_norm,
                levels=self.levels,
            )
            return out

        return _min_norm(run, model)
