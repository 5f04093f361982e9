"""Native Auto-PGD (APGD-CE, APGD-DLR, APGD-T; Linf and L2) on the epsilon-grid engine.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020 (arXiv 2003.01690), Algorithm 1, as in the authors' code
(PyPI ``pyautoattack``, ``autopgd_base.py``), written here on this package's projection
(:func:`attacks.norms.clip_to_ball`) and grid engine (:func:`attacks.engine.nested_grid`):

* start: a random point on the boundary of the ball (Linf: ``eps · t / ‖t‖∞`` with ``t`` uniform
  in ``[-1, 1]^d``; L2: ``eps · g / ‖g‖₂`` with ``g`` Gaussian), clipped to ``[0, 1]``;
* step size ``η = 2·eps`` per example, momentum ``α = 0.75`` (``α = 1`` at the first step)::

      z      = P(x_i + η · dir(∇L(x_i)))
      x_{i+1} = P(x_i + α (z − x_i) + (1 − α)(x_i − x_{i−1}))

* checkpoints every ``k`` iterations, ``k`` starting at ``⌊0.22·N⌋`` and shrinking by
  ``⌊0.03·N⌋`` down to ``⌊0.06·N⌋`` (each at least 1): at a checkpoint the step of an example is
  halved, and it restarts from its best (highest-loss) point, when its loss increased in at most
  ``rho·k`` of the last ``k`` iterations (``rho = 0.75``), or when the step was not halved at the
  previous checkpoint and the best loss has not improved since;
* losses: cross-entropy (``apgd-ce``), DLR ``−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)``
  (``apgd-dlr``), targeted DLR ``−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2)`` (``apgd-t``: one run per
  target ``t`` = the 2nd, 3rd, ... most likely class at ``x``, over ``n_target_classes`` targets);
* ``steps`` iterations cost ``steps + 1`` gradient evaluations per example and run (the start
  point's gradient is the first); ``restarts`` runs, each on the examples still robust.

Differences from the reference, all of which can only keep or lower robust accuracy:

* per-example early stop: an example leaves the batch at its first misclassified iterate (inside
  the ball, verified again by the template), where the reference keeps iterating it. Every other
  example's trajectory is unchanged (its loss and step size are per example; the checkpoint
  schedule is shared and does not depend on the batch);
* the oscillation count at the first checkpoint compares the first iterate with the start point's
  loss, as in the paper (the reference compares it with an unset row of zeros);
* on a grid, only the survivors of the previous epsilon are attacked (``nested=True``); an example
  broken at ``eps_j`` counts as broken at every larger epsilon (nested balls);
* ``parallel=True`` (default): the ``restarts × targets`` runs of an example are rows of one batch
  instead of running one after another on the still-robust; an example leaves (with all its rows)
  at the first break. Every run of the reference is still made up to that point, so this is at
  least as strong; it trades extra gradient evaluations on examples that break for far fewer,
  larger batches (on small batches the per-call overhead dominates: APGD-T with 9 targets runs
  ~2-4x faster on CPU). ``parallel=False`` keeps the reference's sequential order.

Randomness comes from one ``torch.Generator`` seeded with ``seed`` per call: the global RNG is not
touched (and the :class:`~attacks.base.Attack` template forks it anyway).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.base import (
    Attack,
    AttackInputError,
    AttackKind,
    FixedBudgetOutput,
)
from attacks.contracts import DLR_HINT, TARGETED_DLR_HINT
from attacks.engine import EpsRun, ascent_direction, nested_grid
from attacks.gradients import input_gradient
from attacks.norms import Norm, clip_to_ball, perturbation_norm
from attacks.params import check, check_apgd, check_n_target_classes, check_seed
from attacks.tensors import generator, per_row

__all__ = [
    "APGDCE",
    "APGDCEL2",
    "APGDDLR",
    "APGDDLRL2",
    "APGDParams",
    "APGDTargeted",
    "APGDTargetedL2",
    "APGDTargetedParams",
    "apgd_run",
    "ce_loss",
    "dlr_loss",
    "dlr_targeted_loss",
]

logger = logging.getLogger(__name__)

#: momentum weight of the paper (alpha = 0.75); the first step uses no momentum
MOMENTUM = 0.75
#: initial step size relative to eps (the paper's 2·eps)
INITIAL_STEP = 2.0

#: (logits (m, C), labels (m,), targets (m,) or None) -> per-example loss to maximize (m,)
Loss = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def ce_loss(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Per-example cross-entropy (m,) of ``logits`` (m, C) against labels ``y`` (m,)."""
    return F.cross_entropy(logits, y, reduction="none")


def dlr_loss(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020, eq. 6), (m,); needs >= 3 classes."""
    z_sorted, idx_sorted = logits.sort(dim=1)  # ascending
    rows = torch.arange(logits.shape[0], device=logits.device)
    top_is_y = (idx_sorted[:, -1] == y).to(logits.dtype)
    best_other = z_sorted[:, -2] * top_is_y + z_sorted[:, -1] * (1.0 - top_is_y)
    return -(logits[rows, y] - best_other) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)


def dlr_targeted_loss(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Targeted DLR (Croce & Hein 2020, eq. 7), (m,); needs >= 4 classes and ``target`` (m,)."""
    if target is None:
        raise ValueError("dlr_targeted_loss needs target labels")
    z_sorted, _ = logits.sort(dim=1)
    rows = torch.arange(logits.shape[0], device=logits.device)
    scale = z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4]) + 1e-12
    return -(logits[rows, y] - logits[rows, target]) / scale


def ce_targeted_loss(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Targeted cross-entropy ``-CE(z, t)`` (m,): defined for >= 2 classes (``apgd-t-ce``).

    APGD-T's alternative loss in the authors' code (``APGDAttack_targeted.ce_loss_targeted``).
    """
    if target is None:
        raise ValueError("ce_targeted_loss needs target labels")
    return -F.cross_entropy(logits, target, reduction="none")


def _loss_and_grad(
    model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, loss: Loss
) -> tuple[Tensor, Tensor, Tensor]:
    """One forward+backward: logits (m, C), per-example loss (m,), its gradient wrt ``x``.

    Non-finite gradient entries are made finite (:func:`attacks.gradients.input_gradient`), as
    in the grid engine, so one such pixel cannot turn an example's iterates into NaN.
    """
    return input_gradient(model, x, lambda logits: loss(logits, y, target))


def boundary_start(x: Tensor, eps: Tensor, norm: Norm, gen: torch.Generator) -> Tensor:
    """The paper's random start: a point on the eps sphere around ``x`` (m, ...), then [0, 1]."""
    if norm is Norm.LINF:
        t = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1
    else:
        t = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    scale = eps / (perturbation_norm(t, norm) + 1e-12)  # (m,)
    return clip_to_ball(x + t * per_row(scale, x), x, eps, norm)


@dataclass
class _Schedule:
    """The checkpoint schedule of Algorithm 1 for ``steps`` iterations (shared by all rows)."""

    period: int  # current checkpoint spacing k
    min_period: int
    decrement: int
    since_check: int = 0  # iterations since the last checkpoint

    @classmethod
    def for_steps(cls, steps: int) -> _Schedule:
        return cls(
            period=max(int(0.22 * steps), 1),
            min_period=max(int(0.06 * steps), 1),
            decrement=max(int(0.03 * steps), 1),
        )


#: per-row state of an APGD run, every tensor indexed like the rows still attacked
_State = dict[str, Tensor]


def _initial_state(
    x: Tensor,
    y: Tensor,
    eps: Tensor,
    start: tuple[Tensor, Tensor, Tensor],
    target: Tensor | None,
    group: Tensor | None,
) -> _State:
    """The state at the start point ``start = (adv, loss, gradient)`` of every row."""
    adv, cur, grad = start
    m = x.shape[0]
    st: _State = {
        "x": x,
        "y": y,
        "eps": eps,
        "adv": adv,
        "old": adv.clone(),  # previous iterate (momentum)
        "grad": grad,
        "cur": cur,
        "step": INITIAL_STEP * eps,
        "best_x": adv.clone(),  # highest-loss point so far, its gradient and loss
        "best_grad": grad.clone(),
        "best_loss": cur.clone(),
        "increases": torch.zeros(m, dtype=torch.long, device=x.device),
        "last_check_best": cur.clone(),
        "reduced_last": torch.ones(m, dtype=torch.bool, device=x.device),
    }
    if target is not None:
        st["target"] = target
    if group is not None:
        st["group"] = group
    return st


def _retire_broken(
    st: _State, logits: Tensor, active: Tensor, out: Tensor, broken: Tensor
) -> tuple[_State, Tensor]:
    """Early stop: rows whose iterate ``st["adv"]`` (with ``logits``) is misclassified end.

    Their iterate goes to ``out`` and ``broken`` (in place); with a ``"group"`` the other rows of
    a broken example stop too. Returns the state and ``active`` of the rows still attacked.
    """
    hit = logits.argmax(dim=1) != st["y"]
    if bool(hit.any()):
        out[active[hit]] = st["adv"][hit]
        broken[active[hit]] = True
        keep = ~hit
        if "group" in st:  # the example is broken: its parallel rows stop too
            keep &= ~torch.isin(st["group"], st["group"][hit])
        active = active[keep]
        st = {k: v[keep] for k, v in st.items()}
    return st, active


def _track_best(st: _State, sched: _Schedule, rho: float) -> None:
    """Best point (highest loss) so far, then the checkpoint test when one is due (in place)."""
    better = st["cur"] > st["best_loss"]
    for key, src in (("best_x", "adv"), ("best_grad", "grad"), ("best_loss", "cur")):
        st[key][better] = st[src][better]
    sched.since_check += 1
    if sched.since_check == sched.period:
        _checkpoint(st, sched, rho)


def _checkpoint(st: _State, sched: _Schedule, rho: float) -> None:
    """Halve the step and restart from the best point where the loss oscillates or stalls."""
    oscillating = st["increases"] <= sched.period * rho
    stalled = ~st["reduced_last"] & (st["last_check_best"] >= st["best_loss"])
    reduce = oscillating | stalled
    st["reduced_last"] = reduce
    st["last_check_best"] = st["best_loss"].clone()
    st["step"] = torch.where(reduce, st["step"] / 2.0, st["step"])
    st["adv"][reduce] = st["best_x"][reduce]
    st["grad"][reduce] = st["best_grad"][reduce]
    st["increases"] = torch.zeros_like(st["increases"])
    sched.since_check = 0
    sched.period = max(sched.period - sched.decrement, sched.min_period)


def _momentum_step(st: _State, norm: Norm, first: bool) -> tuple[Tensor, Tensor]:
    """Gradient step with momentum, projected twice as in Algorithm 1: (current, next) iterate."""
    a = 1.0 if first else MOMENTUM
    adv, xa, ea = st["adv"], st["x"], st["eps"]
    z = clip_to_ball(
        adv + per_row(st["step"], adv) * ascent_direction(st["grad"], norm), xa, ea, norm
    )
    nxt = clip_to_ball(adv + a * (z - adv) + (1 - a) * (adv - st["old"]), xa, ea, norm)
    return adv, nxt


def apgd_run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: Tensor,
    *,
    norm: Norm,
    steps: int,
    loss: Loss,
    gen: torch.Generator,
    target: Tensor | None = None,
    rho: float = 0.75,
    group: Tensor | None = None,
) -> EpsRun:
    """One APGD run (one restart) on ``x`` (m, ...) with labels ``y`` (m,), budgets ``eps`` (m,).

    Returns the first misclassified iterate of every row that was broken (``broken``) and
    the highest-loss point of the others, all inside their ball and ``[0, 1]``; ``grad_evals``
    counts every row that went through a forward+backward (``<= (steps + 1) · m``).
    ``group`` (m,) marks rows that are parallel runs (restarts, targets) for the same example:
    when one of them is broken, the other rows of its group stop too (returned as ``x``).
    """
    m = x.shape[0]
    out = x.clone()  # (m, ...)
    broken = torch.zeros(m, dtype=torch.bool, device=x.device)
    if m == 0:
        return EpsRun(adversarials=out, broken=broken, grad_evals=0)

    adv = boundary_start(x, eps, norm, gen)
    logits, cur, grad = _loss_and_grad(model, adv, y, target, loss)
    evals = m
    active = torch.arange(m, device=x.device)  # rows of ``x`` still attacked
    st = _initial_state(x, y, eps, (adv, cur, grad), target, group)
    sched = _Schedule.for_steps(steps)
    for i in range(steps + 1):
        # ``logits`` belong to st["adv"]: a misclassified iterate ends its row (early stop).
        st, active = _retire_broken(st, logits, active, out, broken)
        if active.numel() == 0 or i == steps:
            break
        if i > 0:
            _track_best(st, sched, rho)
        adv, nxt = _momentum_step(st, norm, first=i == 0)
        logits, cur, grad = _loss_and_grad(model, nxt, st["y"], st.get("target"), loss)
        evals += int(active.numel())
        st["increases"] = st["increases"] + (cur > st["cur"]).long()
        st["old"], st["adv"], st["grad"], st["cur"] = adv, nxt, grad, cur
    if active.numel() > 0:
        out[active] = st["best_x"]  # highest-loss point of the survivors (not adversarial)
    return EpsRun(adversarials=out, broken=broken, grad_evals=evals)


@dataclass(frozen=True)
class APGDParams:
    """Auto-PGD parameters (defaults: the paper's / AutoAttack "standard" version)."""

    steps: int = 100
    restarts: int = 1
    rho: float = 0.75
    seed: int | None = 0
    nested: bool = True
    parallel: bool = True

    def __post_init__(self) -> None:
        check_apgd(self.steps, self.restarts, self.rho)
        check_seed(self.seed)
        check(isinstance(self.nested, bool), f"nested must be a bool (got {self.nested!r})")
        check(isinstance(self.parallel, bool), f"parallel must be a bool (got {self.parallel!r})")

    def nominal_gradients(self) -> int:
        """``steps × restarts`` per example and epsilon: the grid's nominal count.

        It leaves out the start point's gradient and the targets of APGD-T; the budget without
        early stop is ``(steps + 1) × restarts × targets`` (native ``grad_budget_per_example``).
        """
        return self.steps * self.restarts

    def nominal_forwards(self) -> int:
        """``steps × restarts`` model calls per batch; 0 for a single step."""
        return self.nominal_gradients() if self.steps > 1 else 0


@dataclass(frozen=True)
class APGDTargetedParams(APGDParams):
    """APGD-T: ``n_target_classes`` runs (targets: 2nd, 3rd, ... most likely class at x)."""

    n_target_classes: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        check_n_target_classes(self.n_target_classes)


class _APGDBase(Attack):
    """Shared driver: restarts (and targets) on the still-robust, nested grid, work counts."""

    kind: ClassVar[AttackKind] = AttackKind.FIXED_BUDGET
    restarts_in_run: ClassVar[bool] = True  # restarts inside each epsilon, on the still-robust
    backend: ClassVar[str] = "native"
    loss_name: ClassVar[str]
    min_classes: ClassVar[int] = 2
    # Dataclass fields provided by the parameter classes.
    steps: int
    restarts: int
    seed: int | None
    rho: float  # Linf / L2 only (the L1 runs override _single_run)
    nested: bool
    parallel: bool

    def _targets(self, n_classes: int) -> int:
        return 1

    def grad_budget_per_example(self, n_classes: int = 10) -> int:
        """Gradient evaluations one example costs at one epsilon without early stop."""
        return (self.steps + 1) * self.restarts * self._targets(n_classes)

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> FixedBudgetOutput:
        gen = generator(self.seed, x.device)
        with torch.no_grad():
            n_classes = int(model(x[:1]).shape[1])
        if n_classes < self.min_classes:
            raise AttackInputError(
                f"{self.name} needs a model with at least {self.min_classes} classes "
                f"(got {n_classes} logits)"
            )
        forwards = [1]

        def at(xs: Tensor, ys: Tensor, e: float, prev: Tensor | None) -> EpsRun:
            eps_t = torch.full((xs.shape[0],), e, dtype=xs.dtype, device=xs.device)
            run = self._at(model, xs, ys, eps_t, gen, n_classes, forwards)
            forwards[0] += run.grad_evals
            return run

        if self.nested:
            run = nested_grid(x, y, epsilons, at)
            advs = run.adversarials
            evals = run.grad_evals
        else:
            k_eps, n = len(epsilons), x.shape[0]
            xs = x.repeat((k_eps,) + (1,) * (x.ndim - 1))  # (K*n, ...) row k*n+i: x_i at eps_k
            ys = y.repeat(k_eps)
            eps_t = torch.tensor(epsilons, dtype=x.dtype, device=x.device).repeat_interleave(n)
            run = self._at(model, xs, ys, eps_t, gen, n_classes, forwards)
            forwards[0] += run.grad_evals
            advs = run.adversarials.reshape(k_eps, n, *x.shape[1:])  # (K, n, ...)
            evals = run.grad_evals
        return FixedBudgetOutput(
            adversarials=advs, grad_evals=evals, details={"forward_evals": forwards[0]}
        )

    def _at(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        eps: Tensor,
        gen: torch.Generator,
        n_classes: int,
        forwards: list[int],
    ) -> EpsRun:
        """All restarts (and targets) at per-row budgets ``eps`` (m,), on the still-robust.

        ``parallel``: all ``restarts × targets`` runs of an example are rows of one batch (an
        example leaves at its first break, with all its rows); otherwise they run one after
        another, each on the examples still robust (the reference's order).
        """
        m = x.shape[0]
        out = x.clone()
        broken = torch.zeros(m, dtype=torch.bool, device=x.device)
        ranks = list(range(2, 2 + self._targets(n_classes)))
        runs = [(rank, r) for rank in ranks for r in range(self.restarts)]
        evals = 0
        if m == 0:
            return EpsRun(adversarials=out, broken=broken, grad_evals=0)
        if self.parallel:
            ex = torch.arange(m, device=x.device).repeat(len(runs))  # (R*m,) example per row
            targets = [self._target(model, x, rank, forwards) for rank in ranks]
            target = (
                None
                if targets[0] is None
                else torch.cat([t for t in targets for _ in range(self.restarts)])  # type: ignore[misc]
            )
            run = self._single_run(model, x[ex], y[ex], eps[ex], gen, target, ex)
            out = run.adversarials[:m].clone()  # first run's best point for the robust ones
            out[ex[run.broken]] = run.adversarials[run.broken]
            broken[ex[run.broken]] = True
            return EpsRun(adversarials=out, broken=broken, grad_evals=run.grad_evals)
        alive = torch.arange(m, device=x.device)
        for rank, _ in runs:
            if alive.numel() == 0:
                break
            target1 = self._target(model, x[alive], rank, forwards)
            run = self._single_run(model, x[alive], y[alive], eps[alive], gen, target1, None)
            evals += run.grad_evals
            out[alive] = run.adversarials
            broken[alive[run.broken]] = True
            alive = alive[~run.broken]
        return EpsRun(adversarials=out, broken=broken, grad_evals=evals)

    def _target(self, model: nn.Module, x: Tensor, rank: int, forwards: list[int]) -> Tensor | None:
        return None

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
        """One run (one restart, one target) of every row of ``x`` (m, ...): :func:`apgd_run`."""
        return apgd_run(
            model,
            x,
            y,
            eps,
            norm=self.norm,
            steps=self.steps,
            loss=_LOSSES[self.loss_name],
            gen=gen,
            target=target,
            rho=self.rho,
            group=group,
        )


_LOSSES: dict[str, Loss] = {
    "ce": ce_loss,
    "dlr": dlr_loss,
    "dlr-targeted": dlr_targeted_loss,
    "ce-targeted": ce_targeted_loss,
}


class _APGDUntargeted(APGDParams, _APGDBase):
    pass


class _TargetedRuns(_APGDBase):
    """APGD-T's targets (any norm): the 2nd, 3rd, ... most likely classes at the clean input."""

    loss_name: ClassVar[str] = "dlr-targeted"
    min_classes: ClassVar[int] = 4
    n_target_classes: int
    few_classes_hint: ClassVar[str] = TARGETED_DLR_HINT

    def _targets(self, n_classes: int) -> int:
        return min(self.n_target_classes, n_classes - 1)

    def _target(self, model: nn.Module, x: Tensor, rank: int, forwards: list[int]) -> Tensor | None:
        """The ``rank``-th most likely class at the clean ``x`` (m,), as in the reference."""
        with torch.no_grad():
            logits = model(x)
        forwards[0] += x.shape[0]
        return logits.sort(dim=1)[1][:, -rank]


class _APGDTargetedBase(APGDTargetedParams, _TargetedRuns):
    pass


@dataclass(frozen=True, repr=False)
class APGDCE(_APGDUntargeted):
    """APGD on the cross-entropy loss, Linf (Croce & Hein 2020)."""

    name: ClassVar[str] = "apgd-ce"
    norm: ClassVar[Norm] = Norm.LINF
    loss_name: ClassVar[str] = "ce"


@dataclass(frozen=True, repr=False)
class APGDCEL2(_APGDUntargeted):
    """APGD on the cross-entropy loss, L2 (Croce & Hein 2020)."""

    name: ClassVar[str] = "apgd-ce-l2"
    norm: ClassVar[Norm] = Norm.L2
    loss_name: ClassVar[str] = "ce"


@dataclass(frozen=True, repr=False)
class APGDDLR(_APGDUntargeted):
    """APGD on the DLR loss, Linf (Croce & Hein 2020); needs >= 3 classes."""

    name: ClassVar[str] = "apgd-dlr"
    norm: ClassVar[Norm] = Norm.LINF
    loss_name: ClassVar[str] = "dlr"
    min_classes: ClassVar[int] = 3
    few_classes_hint: ClassVar[str] = DLR_HINT


@dataclass(frozen=True, repr=False)
class APGDDLRL2(_APGDUntargeted):
    """APGD on the DLR loss, L2 (Croce & Hein 2020); needs >= 3 classes."""

    name: ClassVar[str] = "apgd-dlr-l2"
    norm: ClassVar[Norm] = Norm.L2
    loss_name: ClassVar[str] = "dlr"
    min_classes: ClassVar[int] = 3
    few_classes_hint: ClassVar[str] = DLR_HINT


@dataclass(frozen=True, repr=False)
class APGDTargeted(_APGDTargetedBase):
    """APGD-T: targeted DLR over the top ``n_target_classes`` classes, Linf; >= 4 classes."""

    name: ClassVar[str] = "apgd-t"
    norm: ClassVar[Norm] = Norm.LINF


@dataclass(frozen=True, repr=False)
class APGDTargetedL2(_APGDTargetedBase):
    """APGD-T: targeted DLR over the top ``n_target_classes`` classes, L2; >= 4 classes."""

    name: ClassVar[str] = "apgd-t-l2"
    norm: ClassVar[Norm] = Norm.L2
