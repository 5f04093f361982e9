"""AutoAttack cascades on the epsilon grid: ``autoattack`` (standard) and ``autoattack-plus``.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020; the stage lists and parameters are those of the authors' code
(PyPI ``pyautoattack``, ``AutoAttack._set_version``):

* ``standard``: APGD-CE (1 restart) -> APGD-T (9 targets) -> FAB-T (9 targets) -> Square
  (5,000 queries);
* ``plus``: APGD-CE (5 restarts) -> APGD-DLR (5 restarts) -> FAB (5 restarts) -> Square
  (5,000 queries) -> APGD-T (9 targets) -> FAB-T (9 targets).

Each stage is the native attack of that name from :mod:`attacks.registry` (``-l2`` names for the
L2 cascades), run through its own :class:`~attacks.base.Attack` template (so every adversarial is
verified by the stage and again by the cascade). Per example the worst case counts: an example is
broken at ``eps`` as soon as any stage breaks it, and later stages attack only the examples still
robust. Across the grid the cascade follows :func:`attacks.engine.nested_grid`'s rule: at
``eps_k`` only the survivors of every stage at ``eps_{k-1}`` are attacked (an adversarial of a
smaller ball is one of every larger ball), so the curve is monotone and never weaker than running
the cascade once per epsilon on the same examples with the same stages. A minimum-norm stage (FAB)
runs once per example, the first time the example reaches it; its smallest adversarial then
decides every later epsilon.

``AttackResult.details`` records, for the report: ``stages`` (names in order), ``broken_by``
(K, N) index of the stage whose adversarial counts at ``eps_k`` (-1: robust, or clean-misclassified
and not attacked), ``stage_broken`` (S × K newly broken counts), ``stage_grad_evals`` and
``stage_forwards`` (S,) work per stage (forwards include the stages' verification passes),
``stage_seconds`` (S,) wall time per stage,
``stage_attacked`` (S × K examples each stage attacked), ``survivor_bound`` (the survivors'
gradient work without early stop, see :func:`survivor_bound`) and ``work_ratio``.

The stages run with ``log_warnings=False``: their warnings (adversarials that failed a stage's
verification) are returned in the cascade's :attr:`~attacks.base.AttackResult.warnings`, after its
own, and logged once by the cascade (epsilon-unit warnings are the cascade's own, not repeated per
stage and epsilon).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from attacks.backends.counting import GradCounter
from attacks.base import (
    Attack,
    AttackConfigError,
    AttackKind,
    AttackResult,
    FixedBudgetOutput,
    _predict,
)
from attacks.contracts import epsilon_unit_warnings
from attacks.few_classes import stage_for_classes
from attacks.norms import Norm
from attacks.params import check_seed
from attacks.registry import attack_class

__all__ = [
    "L1_STANDARD_STAGES",
    "PLUS_STAGES",
    "STANDARD_STAGES",
    "AutoAttack",
    "AutoAttackL1",
    "AutoAttackL2",
    "AutoAttackPlus",
    "AutoAttackPlusL2",
    "Cascade",
    "run_cascade",
    "survivor_bound",
]

logger = logging.getLogger(__name__)

#: (Linf stage name, parameters) of AutoAttack "standard"; other parameters are the defaults,
#: which are the paper's (100 iterations, 9 target classes, 5,000 Square queries).
STANDARD_STAGES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("apgd-ce", {"restarts": 1}),
    ("apgd-t", {"restarts": 1, "n_target_classes": 9}),
    ("fab-t", {"restarts": 1, "n_target_classes": 9}),
    ("square", {}),
)
#: AutoAttack "standard" for L1 (``_set_version('standard')`` with ``norm='L1'``): l1-APGD-CE with
#: 5 restarts and l1-APGD-T with 5 targets, both with ``use_largereps`` (``larger_eps``). The
#: reference (pyautoattack 0.2) also lists FAB-T and Square for L1, which have no native L1
#: version here: this cascade is the APGD part of AutoAttack L1 (docs/attacks.md says so).
L1_STANDARD_STAGES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("apgd-ce", {"restarts": 5, "larger_eps": True}),
    ("apgd-t", {"restarts": 1, "n_target_classes": 5, "larger_eps": True}),
)
#: AutoAttack "plus" (``_set_version('plus')`` of the reference).
PLUS_STAGES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("apgd-ce", {"restarts": 5}),
    ("apgd-dlr", {"restarts": 5}),
    ("fab", {"restarts": 5}),
    ("square", {}),
    ("apgd-t", {"restarts": 1, "n_target_classes": 9}),
    ("fab-t", {"restarts": 1, "n_target_classes": 9}),
)


@dataclass
class _StageLog:
    name: str
    attacked: list[int]  # (K,)
    broken: list[int]  # (K,)
    grad_evals: int = 0
    forwards: int = 0
    bound: int = 0
    seconds: float = 0.0


class Cascade(Attack):
    """Run ``stages`` in order on the still-robust examples, nested over the epsilon grid."""

    kind: ClassVar[AttackKind] = AttackKind.FIXED_BUDGET
    restarts_in_run: ClassVar[bool] = True  # restarts belong to the stages; the cascade runs once
    backend: ClassVar[str] = "native"
    version: ClassVar[str]
    stage_specs: ClassVar[tuple[tuple[str, dict[str, Any]], ...]]
    seed: int | None

    def nominal_gradients(self) -> int:
        """1 per example and epsilon: the grid's nominal count (the stages' work is measured)."""
        return 1

    def nominal_forwards(self) -> int:
        """No progress estimate (0)."""
        return 0

    def stage_plan(
        self, num_classes: int | None = None
    ) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
        """(stage name, parameters, substitution or ``None``) per stage, for ``num_classes``.

        On fewer than 4 classes a stage whose loss is undefined there runs as its substitute
        (:func:`attacks.few_classes.stage_for_classes`: APGD-T / APGD-DLR -> ``apgd-t-ce``).
        """
        suffix = "" if self.norm is Norm.LINF else f"-{self.norm.value}"
        return [
            stage_for_classes(base + suffix, dict(params), num_classes)
            for base, params in self.stage_specs
        ]

    def settings_for(self, num_classes: int) -> dict[str, Any]:
        """The stages (full parameters: restarts, targets, ...) and substitutions it runs."""
        plan = self.stage_plan(num_classes)
        stages = []
        for attack in self.stages(num_classes):
            params = {k: v for k, v in attack.params().items() if k != "seed"}
            if "n_target_classes" in params:  # the targets it can have: C - 1 at most
                params["targets"] = min(int(params["n_target_classes"]), num_classes - 1)
            stages.append({"stage": attack.name, **params})
        out: dict[str, Any] = {"stages": stages}
        subs = [sub for _, _, sub in plan if sub is not None]
        if subs:
            out["substitutions"] = subs
        return out

    def stages(self, num_classes: int | None = None) -> list[Attack]:
        """The stage attacks (native backend), built from the registry with this seed."""
        out: list[Attack] = []
        for name, params, _ in self.stage_plan(num_classes):
            cls = attack_class(name, backend="native")  # AttackConfigError if missing
            names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
            kwargs = dict(params)
            if "seed" in names:
                kwargs["seed"] = self.seed
            missing = sorted(set(kwargs) - names)
            if missing:
                raise AttackConfigError(
                    f"{self.name}: stage {name!r} has no parameter(s) "
                    f"{', '.join(missing)} needed by AutoAttack {self.version!r}"
                )
            attack = cls(**kwargs)
            if attack.norm is not self.norm:
                raise AttackConfigError(f"{self.name}: stage {attack.name} is not {self.norm}")
            out.append(attack)
        return out

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> FixedBudgetOutput:
        return run_cascade(
            self.stages(_num_classes(model, x)), model, x, y, epsilons, name=self.name
        )

    def _attack(self, model: nn.Module, x: Tensor, y: Tensor, eps: list[float]) -> AttackResult:
        result = super()._attack(model, x, y, eps)  # the input contracts come first
        n_classes = _num_classes(model, x)
        stages = [s.name for s in self.stages(n_classes)]
        if result.details is not None:  # the stages' warnings, after the cascade's own
            result.warnings.extend(result.details.get("warnings", []))
        # ``_run`` saw clean-correct examples and positive epsilons only: re-index its details
        # to the result's (K, N) grid (zeros / -1 elsewhere).
        k_eps, n = len(eps), x.shape[0]
        pos = [k for k, e in enumerate(eps) if e > 0]
        todo = (_predict(model, x) == y).nonzero().squeeze(1)
        inner = result.details
        broken_by = torch.full((k_eps, n), -1, dtype=torch.long, device=x.device)
        per_eps: dict[str, list[list[int]]] = {
            key: [[0] * k_eps for _ in stages] for key in ("stage_attacked", "stage_broken")
        }
        if inner is not None:
            for j, k in enumerate(pos):
                broken_by[k, todo] = inner["broken_by"][j]
                for key, table in per_eps.items():
                    for s in range(len(stages)):
                        table[s][k] = inner[key][s][j]
        details: dict[str, Any] = {
            "version": self.version,
            "stages": stages,
            "broken_by": broken_by,
            **per_eps,
            "stage_grad_evals": inner["stage_grad_evals"] if inner else [0] * len(stages),
            "stage_forwards": inner["stage_forwards"] if inner else [0] * len(stages),
            "stage_seconds": inner["stage_seconds"] if inner else [0.0] * len(stages),
            "survivor_bound": inner["survivor_bound"] if inner else 0,
            "work_ratio": inner["work_ratio"] if inner else 1.0,
            "substitutions": [sub for _, _, sub in self.stage_plan(n_classes) if sub],
        }
        result.details = details
        return result


def _num_classes(model: nn.Module, x: Tensor) -> int:
    """The model's class count (one forward pass of ``x[:1]``)."""
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


def run_cascade(
    stages: list[Attack],
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: list[float],
    *,
    name: str = "cascade",
) -> FixedBudgetOutput:
    """Attack clean-correct ``x`` (n, ...) over sorted positive ``epsilons`` (K) with ``stages``.

    Returns adversarials (K, n, ...) (``x`` where not broken) and the cascade's ``details``
    (``details["warnings"]``: the stages' warnings, not logged; epsilon-unit ones left out).
    """
    k_eps, n = len(epsilons), x.shape[0]
    counter = GradCounter(model)
    # The cascade reports epsilon-unit warnings itself; the stages' other warnings are collected.
    dim = math.prod(x.shape[1:])
    unit = set(epsilon_unit_warnings(epsilons, stages[0].norm, dim)) if stages else set()
    warnings: list[str] = []
    with torch.no_grad():
        n_classes = int(model(x[:1]).shape[1]) if n else 0
    advs = x.unsqueeze(0).repeat((k_eps,) + (1,) * x.ndim)  # (K, n, ...)
    found = x.clone()  # (n, ...) the adversarial that counts, for broken examples
    by = torch.full((n,), -1, dtype=torch.long, device=x.device)  # stage that broke it
    broken_by = torch.full((k_eps, n), -1, dtype=torch.long, device=x.device)  # (K, n)
    logs = [_StageLog(s.name, [0] * k_eps, [0] * k_eps) for s in stages]
    # Minimum-norm stages: smallest norm found (inf: none; nan: not run yet) and its adversarial.
    mn_norm = {
        s: torch.full((n,), float("nan"), dtype=torch.float64, device=x.device)
        for s, a in enumerate(stages)
        if a.kind is AttackKind.MINIMUM_NORM
    }
    mn_adv = {s: x.clone() for s in mn_norm}
    for k, e in enumerate(epsilons):
        for s, stage in enumerate(stages):
            idx = (by < 0).nonzero().squeeze(1)  # still robust at eps_k
            if idx.numel() == 0:
                break
            log = logs[s]
            before, started = counter.forwards, time.perf_counter()
            if stage.kind is AttackKind.MINIMUM_NORM:
                need = idx[torch.isnan(mn_norm[s][idx])]
                log.attacked[k] += int(need.numel())
                if need.numel() > 0:
                    res = stage(
                        counter, x[need], y[need], epsilons=epsilons[k:], log_warnings=False
                    )
                    warnings.extend(w for w in res.warnings if w not in unit)
                    assert res.min_norm is not None
                    mn_norm[s][need] = res.min_norm.double()
                    mn_adv[s][need] = res.adversarials[-1]
                    log.grad_evals += res.grad_evals
                    log.bound += survivor_bound(stage, int(need.numel()), res.grad_evals, n_classes)
                hit = idx[mn_norm[s][idx] <= e]
                found[hit] = mn_adv[s][hit]
            else:
                log.attacked[k] += int(idx.numel())
                res = stage(counter, x[idx], y[idx], epsilons=[e], log_warnings=False)
                warnings.extend(w for w in res.warnings if w not in unit)
                hit = idx[res.success[0]]
                found[hit] = res.adversarials[0][res.success[0]]
                log.grad_evals += res.grad_evals
                log.bound += survivor_bound(stage, int(idx.numel()), res.grad_evals, n_classes)
            log.forwards += counter.forwards - before
            log.seconds += time.perf_counter() - started
            by[hit] = s
            log.broken[k] += int(hit.numel())
            logger.debug(
                "%s eps=%g %s: %d of %d broken", name, e, stage.name, hit.numel(), idx.numel()
            )
        advs[k] = found
        broken_by[k] = by
    grad_evals = sum(log.grad_evals for log in logs)
    bound = sum(log.bound for log in logs)
    details: dict[str, Any] = {
        "stages": [log.name for log in logs],
        "broken_by": broken_by,
        "stage_attacked": [log.attacked for log in logs],
        "stage_broken": [log.broken for log in logs],
        "stage_grad_evals": [log.grad_evals for log in logs],
        "stage_forwards": [log.forwards for log in logs],
        "stage_seconds": [log.seconds for log in logs],
        "survivor_bound": bound,
        "work_ratio": grad_evals / bound if bound else 1.0,
        "warnings": warnings,
    }
    return FixedBudgetOutput(adversarials=advs, grad_evals=grad_evals, details=details)


def survivor_bound(stage: Attack, attacked: int, measured: int, n_classes: int) -> int:
    """Gradient work of ``stage`` on ``attacked`` examples without early stop.

    Uses the stage's ``grad_budget_per_example(n_classes)`` where it has one (APGD: (steps + 1) ×
    restarts × targets); otherwise the measured work (the stage's own early stops are then not
    credited).
    """
    budget = getattr(stage, "grad_budget_per_example", None)
    if callable(budget):
        return attacked * int(budget(n_classes))
    return measured


@dataclass(frozen=True, repr=False)
class _CascadeParams:
    seed: int | None = 0

    def __post_init__(self) -> None:
        check_seed(self.seed)


@dataclass(frozen=True, repr=False)
class AutoAttack(_CascadeParams, Cascade):
    """AutoAttack "standard", Linf: APGD-CE -> APGD-T -> FAB-T -> Square, nested grid."""

    name: ClassVar[str] = "autoattack"
    norm: ClassVar[Norm] = Norm.LINF
    version: ClassVar[str] = "standard"
    stage_specs: ClassVar[tuple[tuple[str, dict[str, Any]], ...]] = STANDARD_STAGES


@dataclass(frozen=True, repr=False)
class AutoAttackL2(_CascadeParams, Cascade):
    """AutoAttack "standard", L2: APGD-CE -> APGD-T -> FAB-T -> Square, nested grid."""

    name: ClassVar[str] = "autoattack-l2"
    norm: ClassVar[Norm] = Norm.L2
    version: ClassVar[str] = "standard"
    stage_specs: ClassVar[tuple[tuple[str, dict[str, Any]], ...]] = STANDARD_STAGES


@dataclass(frozen=True, repr=False)
class AutoAttackL1(_CascadeParams, Cascade):
    """AutoAttack "standard", L1 (Croce & Hein 2021): l1-APGD-CE -> l1-APGD-T, nested grid."""

    name: ClassVar[str] = "autoattack-l1"
    norm: ClassVar[Norm] = Norm.L1
    version: ClassVar[str] = "standard"
    stage_specs: ClassVar[tuple[tuple[str, dict[str, Any]], ...]] = L1_STANDARD_STAGES


@dataclass(frozen=True, repr=False)
class AutoAttackPlus(_CascadeParams, Cascade):
    """AutoAttack "plus", Linf: APGD-CE/DLR ×5, FAB ×5, Square, APGD-T, FAB-T; nested grid."""

    name: ClassVar[str] = "autoattack-plus"
    norm: ClassVar[Norm] = Norm.LINF
    version: ClassVar[str] = "plus"
    stage_specs: ClassVar[tuple[tuple[str, dict[str, Any]], ...]] = PLUS_STAGES


@dataclass(frozen=True, repr=False)
class AutoAttackPlusL2(_CascadeParams, Cascade):
    """AutoAttack "plus", L2: APGD-CE/DLR ×5, FAB ×5, Square, APGD-T, FAB-T; nested grid."""

    name: ClassVar[str] = "autoattack-plus-l2"
    norm: ClassVar[Norm] = Norm.L2
    version: ClassVar[str] = "plus"
    stage_specs: ClassVar[tuple[tuple[str, dict[str, Any]], ...]] = PLUS_STAGES
