"""pyautoattack 0.2 adapters (the authors' AutoAttack code, packaged): the plain way a user runs it.

* ``autoattack`` / ``autoattack-l2``: one ``pyautoattack.AutoAttack(model, norm=..., eps=e,
  version="standard", seed=seed)`` per epsilon and ``run_standard_evaluation(x, y)`` (APGD-CE ->
  APGD-T -> FAB-T -> Square, each on the still-robust, at that epsilon only). This is the reference
  the native ``autoattack`` is measured against (``benchmarks/autoattack_grid.py``).
* ``apgd-ce``, ``apgd-t`` (+ ``-l2``): ``APGDAttack`` / ``APGDAttack_targeted`` with ``n_iter =
  steps`` and ``n_restarts = restarts``, one object per epsilon (the reference for the native APGD
  cross-check in ``tests/test_attacks_backend_autoattack.py``).

Quirks handled or documented here:

* fewer classes: "standard" sets 9 APGD-T and FAB-T targets, and the library indexes past the last
  logit with fewer than 10 classes (``IndexError``); the adapter sets ``C - 1`` targets, as the
  library's own ``check_n_classes`` warning advises. Below 4 classes its targeted DLR loss is
  undefined: ``autoattack`` and ``apgd-t`` refuse the model in one line (``min_classes``), where
  the native cascade substitutes ``apgd-t-ce`` (:mod:`attacks.few_classes`).

* ``seed`` must be an int: with ``seed=None`` the library seeds from the clock. It calls
  ``torch.manual_seed(seed)`` on the *global* RNG; the :class:`~attacks.base.Attack` template forks
  the RNG around every call, so the caller's RNG state is unchanged afterwards.
* ``run_standard_evaluation`` returns ``x`` for the examples it did not break and logs through the
  ``auto-attack`` logger (nothing is printed). It runs its randomness / logit-range checks on every
  call (a few forward passes, counted in ``forward_evals``).
* Work is counted by wrapping the model in :class:`~attacks.backends.counting.GradCounter`:
  ``grad_evals`` = examples forwarded with a gradient-tracked input (each is followed by one
  backward; FAB's per-class Jacobian counts once per example, like its single backward call),
  ``details["forward_evals"]`` = every example forwarded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pyautoattack import AutoAttack as _PyAutoAttack
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
from torch import Tensor, nn

from attacks.backends.common import per_eps, target_count
from attacks.base import Attack, AttackKind, FixedBudgetOutput
from attacks.contracts import TARGETED_DLR_HINT
from attacks.norms import Norm
from attacks.params import check_apgd, check_int_seed, check_n_target_classes

__all__ = [
    "PyAutoAttack",
    "PyAutoAttackAPGDCE",
    "PyAutoAttackAPGDCEL2",
    "PyAutoAttackAPGDT",
    "PyAutoAttackAPGDTL2",
    "PyAutoAttackL2",
]

_NORMS = {Norm.LINF: "Linf", Norm.L2: "L2"}
#: examples per batch inside run_standard_evaluation (the library's default)
BATCH_SIZE = 250


@dataclass(frozen=True)
class _AutoAttackParams:
    seed: int | None = 0  # must be an int (None: the library seeds from the clock)

    def __post_init__(self) -> None:
        check_int_seed(self.seed)


class _AutoAttackBase(_AutoAttackParams, Attack):
    kind: ClassVar[AttackKind] = AttackKind.FIXED_BUDGET
    backend: ClassVar[str] = "autoattack"
    min_classes: ClassVar[int] = 4
    few_classes_hint: ClassVar[str] = (
        "its APGD-T stage uses the targeted DLR loss (Croce & Hein 2020, eq. 7), which needs a "
        "4th class; the native autoattack (--backend native, --protocol standard) substitutes "
        "the targeted cross-entropy ({apgd_t_ce}) for it"
    )

    def nominal_gradients(self) -> int:
        """1 per example and epsilon: the grid's nominal count (the stages' work is measured)."""
        return 1

    def nominal_forwards(self) -> int:
        """No progress estimate (0)."""
        return 0

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> FixedBudgetOutput:
        targets = target_count(model, x, 9)

        def perturb(m: nn.Module, e: float) -> Tensor:
            adversary = _PyAutoAttack(
                m,
                norm=_NORMS[self.norm],
                eps=e,
                version="standard",
                seed=self.seed,
                device=x.device,
            )
            # "standard" asks for 9 targets; with fewer than 10 classes the library indexes
            # past the last logit (IndexError): C - 1 targets, as its check_n_classes advises.
            adversary.apgd_targeted.n_target_classes = targets
            adversary.fab.n_target_classes = targets
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=BATCH_SIZE)
            out: Tensor = x_adv
            return out

        return per_eps(perturb, model, epsilons)


@dataclass(frozen=True, repr=False)
class PyAutoAttack(_AutoAttackBase):
    """pyautoattack ``AutoAttack(version="standard")``, Linf, one adversary per epsilon."""

    name: ClassVar[str] = "autoattack"
    norm: ClassVar[Norm] = Norm.LINF


@dataclass(frozen=True, repr=False)
class PyAutoAttackL2(_AutoAttackBase):
    """pyautoattack ``AutoAttack(version="standard")``, L2, one adversary per epsilon."""

    name: ClassVar[str] = "autoattack-l2"
    norm: ClassVar[Norm] = Norm.L2


@dataclass(frozen=True)
class _APGDParams:
    steps: int = 100
    restarts: int = 1
    rho: float = 0.75
    seed: int | None = 0  # must be an int (None: the library seeds from the clock)

    def __post_init__(self) -> None:
        check_apgd(self.steps, self.restarts, self.rho)
        check_int_seed(self.seed)

    def nominal_gradients(self) -> int:
        """``steps × restarts`` per example and epsilon: the grid's nominal count.

        It leaves out the start point's gradient and the targets of APGD-T; the budget without
        early stop is ``(steps + 1) × restarts × targets`` (native ``grad_budget_per_example``).
        """
        return self.steps * self.restarts

    def nominal_forwards(self) -> int:
        """``steps × restarts`` model calls per batch; 0 for a single step."""
        return self.nominal_gradients() if self.steps > 1 else 0


class _APGDCEBase(_APGDParams, Attack):
    kind: ClassVar[AttackKind] = AttackKind.FIXED_BUDGET
    restarts_in_run: ClassVar[bool] = True  # the library's n_restarts
    backend: ClassVar[str] = "autoattack"

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> FixedBudgetOutput:
        def perturb(m: nn.Module, e: float) -> Tensor:
            attack = APGDAttack(
                m,
                n_iter=self.steps,
                norm=_NORMS[self.norm],
                n_restarts=self.restarts,
                eps=e,
                seed=self.seed,
                loss="ce",
                rho=self.rho,
                device=x.device,
            )
            out: Tensor = attack.perturb(x, y)
            return out

        return per_eps(perturb, model, epsilons)


@dataclass(frozen=True)
class _APGDTParams(_APGDParams):
    n_target_classes: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        check_n_target_classes(self.n_target_classes)


class _APGDTBase(_APGDTParams, Attack):
    kind: ClassVar[AttackKind] = AttackKind.FIXED_BUDGET
    restarts_in_run: ClassVar[bool] = True  # the library's n_restarts
    backend: ClassVar[str] = "autoattack"
    min_classes: ClassVar[int] = 4
    few_classes_hint: ClassVar[str] = TARGETED_DLR_HINT

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> FixedBudgetOutput:
        targets = target_count(model, x, self.n_target_classes)

        def perturb(m: nn.Module, e: float) -> Tensor:
            attack = APGDAttack_targeted(
                m,
                n_iter=self.steps,
                norm=_NORMS[self.norm],
                n_restarts=self.restarts,
                eps=e,
                seed=self.seed,
                rho=self.rho,
                n_target_classes=targets,
                device=x.device,
            )
            out: Tensor = attack.perturb(x, y)
            return out

        return per_eps(perturb, model, epsilons)


@dataclass(frozen=True, repr=False)
class PyAutoAttackAPGDCE(_APGDCEBase):
    """pyautoattack ``APGDAttack(loss="ce")``, Linf, one object per epsilon."""

    name: ClassVar[str] = "apgd-ce"
    norm: ClassVar[Norm] = Norm.LINF


@dataclass(frozen=True, repr=False)
class PyAutoAttackAPGDCEL2(_APGDCEBase):
    """pyautoattack ``APGDAttack(loss="ce")``, L2, one object per epsilon."""

    name: ClassVar[str] = "apgd-ce-l2"
    norm: ClassVar[Norm] = Norm.L2


@dataclass(frozen=True, repr=False)
class PyAutoAttackAPGDT(_APGDTBase):
    """pyautoattack ``APGDAttack_targeted``, Linf, one object per epsilon."""

    name: ClassVar[str] = "apgd-t"
    norm: ClassVar[Norm] = Norm.LINF


@dataclass(frozen=True, repr=False)
class PyAutoAttackAPGDTL2(_APGDTBase):
    """pyautoattack ``APGDAttack_targeted``, L2, one object per epsilon."""

    name: ClassVar[str] = "apgd-t-l2"
    norm: ClassVar[Norm] = Norm.L2
