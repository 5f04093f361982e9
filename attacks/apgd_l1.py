"""Native l1-APGD (APGD-CE and APGD-T for the L1 threat model) on the epsilon-grid engine.

Croce & Hein, "Mind the box: l1-APGD for sparse adversarial attacks on image classifiers",
ICML 2021 (arXiv 2103.01208), as in the authors' code (PyPI ``pyautoattack``,
``autopgd_base.py``, ``norm='L1'``), written on this package's projection
(:func:`attacks.norms.l1_box_projection`: the exact projection onto the L1 ball intersected with
the ``[0, 1]`` box) and the APGD driver of :mod:`attacks.apgd` (restarts, targets, parallel
rows, nested grid, early stop):

* start: a Gaussian ``t`` projected onto the ball ∩ box;
* a k-sparse step: only the coordinates whose ``|∇L|`` is among the top fraction ``topk`` move,
  each by ``η · sign(∇L_i) / k`` (``k`` = how many move), then the iterate is projected; there is
  no momentum; ``η`` starts at ``eps`` and ``topk`` at 0.2;
* sparsity-adaptive schedule: every ``⌊0.04·N⌋`` iterations (at least 1) the sparsity ``s`` of
  the best point so far (its count of changed values) sets ``topk = s / (1.5·d)``; where ``s``
  dropped by more than 5 % since the last checkpoint, the step goes back to ``eps`` and the run
  restarts from its best point, otherwise the step shrinks by 1.5 (never below ``eps / 10``);
* ``larger_eps`` (AutoAttack's L1 "standard" sets it: ``use_largereps``): 30 % of the ``steps``
  at ``3·eps``, 30 % at ``2·eps`` and the rest at ``eps``, each stage starting from the previous
  stage's best point projected into the smaller ball; only the last stage (at ``eps``) can break
  an example;
* losses: cross-entropy (``apgd-ce-l1``), targeted DLR (``apgd-t-l1``: one run per target, the
  2nd, 3rd, ... most likely class at the clean input; >= 4 classes) and, for fewer classes, the
  targeted cross-entropy (``apgd-t-ce-l1``, what ``autoattack-l1`` runs instead of APGD-T there,
  :mod:`attacks.few_classes`).

AutoAttack's L1 "standard" version runs APGD-CE with 5 restarts and APGD-T with 5 targets, both
with ``larger_eps``: these are the defaults here. As for Linf/L2 (:mod:`attacks.apgd`), an example
leaves at its first misclassified iterate inside the ``eps`` ball, which can only lower robust
accuracy compared with the reference. ``steps`` iterations cost ``steps + stages`` gradient
evaluations per example and run (each stage's start point has one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from attacks.apgd import (
    _LOSSES,
    Loss,
    _APGDBase,
    _loss_and_grad,
    _retire_broken,
    _State,
    _TargetedRuns,
)
from attacks.engine import EpsRun
from attacks.norms import Norm, l1_box_projection
from attacks.params import check, check_n_target_classes, check_positive_int, check_seed

__all__ = [
    "APGDCEL1",
    "APGDL1Params",
    "APGDL1TargetedParams",
    "APGDTargetedCEL1",
    "APGDTargetedL1",
    "apgd_l1_run",
    "larger_eps_schedule",
]

#: first fraction of coordinates a step moves (the reference's ``topk = 0.2``)
INITIAL_TOPK = 0.2
#: step shrink factor and floor (``adasp_redstep``, ``adasp_minstep``)
STEP_DECAY = 1.5
MIN_STEP_FRACTION = 10.0


def larger_eps_schedule(steps: int, larger_eps: bool) -> list[tuple[float, int]]:
    """``(eps multiplier, iterations)`` of each stage: ``[(3, ⌈.3N⌉), (2, ⌈.3N⌉), (1, rest)]``.

    Without ``larger_eps``, or with fewer than 3 steps (no room for three stages): one stage
    ``[(1, N)]``.
    """
    if not larger_eps or steps < 3:
        return [(1.0, steps)]
    first = math.ceil(0.3 * steps)
    return [(3.0, first), (2.0, first), (1.0, steps - 2 * first)]


def _l0(delta: Tensor) -> Tensor:
    """Number of non-zero values per row of ``delta`` (m, ...) -> (m,) float."""
    return (delta != 0).reshape(delta.shape[0], -1).sum(dim=1).to(delta.dtype)


def _sparse_step(grad: Tensor, topk: Tensor, step: Tensor) -> Tensor:
    """The k-sparse ascent step (m, ...): ``step · sign(g) / k`` on the top-``topk`` ``|g|``."""
    m = grad.shape[0]
    d = grad[0].numel()
    flat = grad.reshape(m, d).abs()  # (m, d)
    kth = ((1.0 - topk) * d).clamp(0, d - 1).long()  # (m,) index into the ascending sort
    thresh = flat.sort(dim=1).values.gather(1, kth.unsqueeze(1))  # (m, 1)
    s = (grad.reshape(m, d) * (flat >= thresh)).sign()  # (m, d)
    return (s * (step / (s.abs().sum(dim=1) + 1e-10)).unsqueeze(1)).reshape(grad.shape)


def _checkpoint_l1(st: _State, d: int, full_eps: Tensor) -> None:
    """Sparsity-adaptive checkpoint (in place): ``topk``, step size, restart from the best."""
    sp = _l0(st["best_x"] - st["x"])  # (m,)
    dropped = sp / st["sp_old"].clamp_min(1.0) < 0.95
    st["topk"] = sp / d / STEP_DECAY
    st["step"] = torch.where(dropped, full_eps, st["step"] / STEP_DECAY)
    st["step"] = torch.minimum(torch.maximum(st["step"], full_eps / MIN_STEP_FRACTION), full_eps)
    st["sp_old"] = sp
    st["adv"][dropped] = st["best_x"][dropped]
    st["grad"][dropped] = st["best_grad"][dropped]


def _stage(
    model: nn.Module,
    st: _State,
    iters: int,
    loss: Loss,
    active: Tensor,
    sink: tuple[Tensor, Tensor] | None,
) -> tuple[_State, Tensor, int]:
    """``iters`` l1-APGD iterations from ``st["adv"]`` at budgets ``st["eps"]``.

    ``active`` (m,): the run's rows that ``st`` holds. ``sink = (out, broken)`` in the last
    stage: misclassified iterates end their row (written to ``out`` / ``broken``). Returns the
    state of the rows still attacked, their indices and the gradient evaluations (the start
    point's included).
    """
    d = st["x"][0].numel()
    logits, st["cur"], st["grad"] = _loss_and_grad(
        model, st["adv"], st["y"], st.get("target"), loss
    )
    evals = int(st["x"].shape[0])
    for key, src in (("best_x", "adv"), ("best_grad", "grad"), ("best_loss", "cur")):
        st[key] = st[src].clone()
    period, since = max(int(0.04 * iters), 1), 0
    for i in range(iters + 1):
        if sink is not None:
            st, active = _retire_broken(st, logits, active, sink[0], sink[1])
        if active.numel() == 0 or i == iters:
            break
        moved = st["adv"] + _sparse_step(st["grad"], st["topk"], st["step"])
        st["adv"] = st["x"] + l1_box_projection(st["x"], moved - st["x"], st["eps"])
        logits, st["cur"], st["grad"] = _loss_and_grad(
            model, st["adv"], st["y"], st.get("target"), loss
        )
        evals += int(active.numel())
        better = st["cur"] > st["best_loss"]
        for key, src in (("best_x", "adv"), ("best_grad", "grad"), ("best_loss", "cur")):
            st[key][better] = st[src][better]
        since += 1
        if since == period:
            _checkpoint_l1(st, d, st["eps"])
            since = 0
    return st, active, evals


def apgd_l1_run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: Tensor,
    *,
    steps: int,
    loss: Loss,
    gen: torch.Generator,
    larger_eps: bool = True,
    target: Tensor | None = None,
    group: Tensor | None = None,
) -> EpsRun:
    """One l1-APGD run on ``x`` (m, ...) with labels ``y`` (m,) and L1 budgets ``eps`` (m,).

    Returns the first misclassified iterate of every broken row and the highest-loss point
    (at ``eps``) of the others, all inside their L1 ball and ``[0, 1]``; ``grad_evals`` counts
    every row that went through a forward+backward. ``group`` (m,) marks parallel rows of the
    same example, which stop together (as in :func:`attacks.apgd.apgd_run`).
    """
    m = x.shape[0]
    out = x.clone()  # (m, ...)
    broken = torch.zeros(m, dtype=torch.bool, device=x.device)
    if m == 0:
        return EpsRun(adversarials=out, broken=broken, grad_evals=0)
    stages = larger_eps_schedule(steps, larger_eps)
    noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    start = x + l1_box_projection(x, noise, eps * stages[0][0])
    d = x[0].numel()
    st: _State = {"x": x, "y": y, "adv": start}
    if target is not None:
        st["target"] = target
    if group is not None:
        st["group"] = group
    active = torch.arange(m, device=x.device)
    evals = 0
    for k, (factor, iters) in enumerate(stages):
        st["eps"] = eps[active] * factor
        st["adv"] = st["x"] + l1_box_projection(st["x"], st["adv"] - st["x"], st["eps"])
        if larger_eps:  # the reference passes each stage its start (x_init): sparsity from it
            st["sp_old"] = _l0(st["adv"] - st["x"])
            st["topk"] = st["sp_old"] / d / STEP_DECAY
        else:  # a fresh start: topk 0.2 and "every value changed"
            st["topk"] = torch.full_like(st["eps"], INITIAL_TOPK)
            st["sp_old"] = torch.full_like(st["eps"], float(d))
        st["step"] = st["eps"].clone()
        last = k == len(stages) - 1
        st, active, used = _stage(model, st, iters, loss, active, (out, broken) if last else None)
        evals += used
        st["adv"] = st["best_x"]  # the next stage starts from this stage's best point
    if active.numel() > 0:
        out[active] = st["best_x"]  # highest-loss point of the survivors (not adversarial)
    return EpsRun(adversarials=out, broken=broken, grad_evals=evals)


@dataclass(frozen=True)
class APGDL1Params:
    """l1-APGD parameters (defaults: AutoAttack's L1 "standard" version for APGD-CE)."""

    steps: int = 100
    restarts: int = 5
    larger_eps: bool = True
    seed: int | None = 0
    nested: bool = True
    parallel: bool = True

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_int("restarts", self.restarts)
        check_seed(self.seed)
        for name in ("larger_eps", "nested", "parallel"):
            value = getattr(self, name)
            check(isinstance(value, bool), f"{name} must be a bool (got {value!r})")

    def nominal_gradients(self) -> int:
        """``steps × restarts`` per example and epsilon (as :class:`attacks.apgd.APGDParams`)."""
        return self.steps * self.restarts

    def nominal_forwards(self) -> int:
        """``steps × restarts`` model calls per batch; 0 for a single step."""
        return self.nominal_gradients() if self.steps > 1 else 0


@dataclass(frozen=True)
class APGDL1TargetedParams(APGDL1Params):
    """l1-APGD-T (AutoAttack L1 "standard": 1 restart, 5 target classes, ``larger_eps``)."""

    restarts: int = 1
    n_target_classes: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_n_target_classes(self.n_target_classes)


class _L1Runs(_APGDBase):
    """The APGD driver with :func:`apgd_l1_run` as its single run."""

    larger_eps: bool

    def grad_budget_per_example(self, n_classes: int = 10) -> int:
        """Gradient evaluations one example costs at one epsilon without early stop."""
        stages = len(larger_eps_schedule(self.steps, self.larger_eps))
        return (self.steps + stages) * self.restarts * self._targets(n_classes)

    def _single_run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        eps: Tensor,
        gen: torch.Generator,
        target: Tensor | None,
        group: Tensor | None,
    ) -> EpsRun:
        return apgd_l1_run(
            model,
            x,
            y,
            eps,
            steps=self.steps,
            loss=_LOSSES[self.loss_name],
            gen=gen,
            larger_eps=self.larger_eps,
            target=target,
            group=group,
        )


@dataclass(frozen=True, repr=False)
class APGDCEL1(APGDL1Params, _L1Runs):
    """l1-APGD on the cross-entropy loss (Croce & Hein 2021); 5 restarts, ``larger_eps``."""

    name: ClassVar[str] = "apgd-ce-l1"
    norm: ClassVar[Norm] = Norm.L1
    loss_name: ClassVar[str] = "ce"


@dataclass(frozen=True, repr=False)
class APGDTargetedL1(APGDL1TargetedParams, _L1Runs, _TargetedRuns):
    """l1-APGD-T: targeted DLR over the top ``n_target_classes`` classes; >= 4 classes."""

    name: ClassVar[str] = "apgd-t-l1"
    norm: ClassVar[Norm] = Norm.L1


@dataclass(frozen=True, repr=False)
class APGDTargetedCEL1(APGDL1TargetedParams, _L1Runs, _TargetedRuns):
    """l1-APGD-T on the targeted cross-entropy ``-CE(z, t)``; any number of classes >= 2."""

    name: ClassVar[str] = "apgd-t-ce-l1"
    norm: ClassVar[Norm] = Norm.L1
    loss_name: ClassVar[str] = "ce-targeted"
    min_classes: ClassVar[int] = 2
    few_classes_hint: ClassVar[str] = ""
