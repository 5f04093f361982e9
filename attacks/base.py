"""The Attack protocol: one template method that validates, freezes, runs and verifies.

Subclasses implement only :meth:`Attack._run`. Everything that decides what counts as a broken
example lives here (and in :mod:`attacks.norms`), so native attacks and library backends are judged
by the same rules:

* the input contracts of :mod:`attacks.contracts` are checked before any work: inputs finite
  and in ``[0, 1]`` (any floating dtype; attacked in the model's dtype, float32 for half-precision
  models), labels integer class
  indices in ``[0, num_classes)``, the model's output a float tensor ``(N, num_classes)``, finite
  on the clean inputs; epsilons finite, ``>= 0`` and sorted ascending (budgets that look like the
  0..255 scale are recorded in :attr:`AttackResult.warnings` and logged as a WARNING);
* an empty batch (``N = 0``) returns an empty result of the right shapes without calling the
  model;
* the model runs in eval mode with frozen parameters (:func:`attacks.guard.frozen_eval`);
* clean-misclassified examples are not attacked: they count as broken at every epsilon with
  ``adversarial = x``; at ``eps = 0`` the adversarial is ``x`` itself, so robust accuracy at
  ``eps = 0`` equals clean accuracy exactly;
* every adversarial is checked by :func:`attacks.norms.verify_adversarials` (ones that fail are
  replaced by ``x``, flagged in :attr:`AttackResult.verify_failed` and counted in one message
  per epsilon of :attr:`AttackResult.warnings`) and
  re-classified by one forward pass per epsilon; a prediction with non-finite logits counts as
  "not the true class" (the model has no valid output there);
* the returned adversarial of an example that is not broken at an epsilon is ``x`` itself (the
  attack's last iterate is not kept), so ``norms`` is 0 there, for every kind and backend;
* minimum-norm attacks return one best adversarial per example and every threshold is read off it;
* warnings are *returned* in :attr:`AttackResult.warnings`; the template logs them once, in
  :meth:`Attack.__call__`, unless the caller asks it not to (``log_warnings=False``: the caller
  logs them, e.g. once per grid) – a cascade runs its stages that way and returns their warnings.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from attacks.contracts import (
    FEW_CLASS_SUBSTITUTE,
    AttackInputError,
    check_clean_logits_finite,
    check_label_values,
    check_logits,
    epsilon_unit_warnings,
    model_dtype,
    validate_epsilons,
    validate_inputs,
)
from attacks.guard import frozen_eval, seeded
from attacks.norms import Norm, perturbation_norm, verify_adversarials
from attacks.params import AttackConfigError
from attacks.tensors import expand_like
from attacks.wrappers import CastInputs

__all__ = [
    "Attack",
    "AttackConfigError",
    "AttackInputError",
    "AttackKind",
    "AttackResult",
    "FixedBudgetOutput",
    "MinimumNormOutput",
]

logger = logging.getLogger(__name__)

#: examples per forward pass when the template re-classifies inputs and adversarials
PREDICT_BATCH = 1024
#: model dtypes attacked in float32 through :class:`attacks.wrappers.CastInputs`
HALF_DTYPES = (torch.float16, torch.bfloat16)


class AttackKind(str, Enum):
    """Fixed-budget attacks run once per epsilon; minimum-norm attacks run once for all."""

    FIXED_BUDGET = "fixed_budget"
    MINIMUM_NORM = "minimum_norm"


@dataclass
class AttackResult:
    """Per-epsilon outcome of an attack on N examples over K epsilons.

    ``adversarials[k, i]`` is a verified adversarial (inside the ``eps_k`` ball and ``[0, 1]``,
    misclassified) where ``success[k, i]``, and exactly ``x[i]`` everywhere else (the example is
    not broken at ``eps_k``; a clean-misclassified example is ``x[i]`` with ``success`` True). It
    is in the dtype the attack ran in: the model's floating dtype, or float32 for a float16 /
    bfloat16 model (inputs of another floating dtype are cast to it before the attack).
    """

    epsilons: list[float]  # (K,) sorted ascending, as given
    adversarials: Tensor  # (K, N, C, H, W); equal to x where success is False
    success: Tensor  # bool (K, N): verified adversarial AND misclassified
    norms: Tensor  # (K, N) perturbation norm of adversarials[k] (0 where success is False)
    min_norm: Tensor | None  # (N,) minimum-norm attacks: smallest successful norm (inf if none)
    grad_evals: int  # example-gradient evaluations performed (forward+backward per example)
    predictions: Tensor | None = None  # (K, N) labels of adversarials[k]; y where not broken
    # Attack-specific extras (e.g. a cascade's per-stage counts); None for most attacks.
    details: dict[str, Any] | None = None
    # bool (K, N): the attack returned a point that failed verification (replaced by x)
    verify_failed: Tensor | None = None
    # Every warning of the run: epsilon-unit warnings (epsilons that look like 0..255) first, then
    # one message per epsilon with adversarials that failed verification (and a cascade's stages').
    warnings: list[str] = field(default_factory=list)

    def robust_accuracy(self) -> list[float]:
        """Fraction of examples not broken, per epsilon (K,)."""
        if self.success.shape[1] == 0:
            return [math.nan] * len(self.epsilons)
        return (1.0 - self.success.float().mean(dim=1)).tolist()


@dataclass
class FixedBudgetOutput:
    """What a fixed-budget ``_run`` returns: one adversarial per epsilon and example."""

    adversarials: Tensor  # (K, n, C, H, W)
    grad_evals: int
    details: dict[str, Any] | None = None  # passed on to AttackResult.details


@dataclass
class MinimumNormOutput:
    """What a minimum-norm ``_run`` returns: the best adversarial found per example."""

    adversarials: Tensor  # (n, C, H, W); anything (e.g. x) where nothing was found
    grad_evals: int
    found: Tensor | None = None  # bool (n,) the attack's own claim; None = decide by prediction


class Attack(ABC):
    """An attack ``attack(model, x, y, *, epsilons) -> AttackResult``.

    Concrete attacks are frozen dataclasses whose fields are their parameters, so
    :meth:`params` and the registry's parameter check need no extra bookkeeping.
    """

    name: ClassVar[str]
    norm: ClassVar[Norm]
    kind: ClassVar[AttackKind]
    backend: ClassVar[str]
    # Overridden by dataclass fields in attacks that support them.
    restarts: int = 1
    seed: int | None = None
    #: True where ``_run`` runs all ``restarts`` itself (the attack's own loop, or a library's
    #: ``n_restarts``): the template then calls ``_run`` once instead of restarting it, which
    #: would run ``restarts²`` attempts
    restarts_in_run: ClassVar[bool] = False
    #: the fewest classes the attack's loss is defined for; the template refuses a model with
    #: fewer logits before any work (one line: ``few_classes_hint`` says why and what to run)
    min_classes: ClassVar[int] = 1
    few_classes_hint: ClassVar[str] = ""

    def params(self) -> dict[str, Any]:
        """The attack's parameters (JSON-able), recorded next to every result."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    # -- nominal work (what the grid accounts without running the attack) ----------------------

    def nominal_gradients(self) -> int:
        """Nominal example-gradient evaluations per example and attacked epsilon (fixed budget)
        or per example (minimum norm): the grid's "naive" work account.

        The generic rule, for attacks that do not override it: ``steps × restarts ×
        binary_search_steps`` over the parameters the attack has (1 for a missing one). Every
        registered attack overrides it with its own formula, giving the same number.
        """
        p = self.params()
        return (
            int(p.get("steps", 1))
            * int(p.get("restarts", 1))
            * int(p.get("binary_search_steps", 1))
        )

    def nominal_forwards(self) -> int:
        """Model calls per batch a progress bar can count against (0: no estimate).

        The generic rule: ``steps × binary_search_steps × restarts`` for an attack with a
        ``steps`` loop of more than one step, else 0 (one-step attacks, query-based ones).
        """
        p = self.params()
        try:
            steps = int(p.get("steps") or 0)
            searches = int(p.get("binary_search_steps") or 1)
            restarts = int(p.get("restarts") or 1)
        except (TypeError, ValueError):
            return 0
        return steps * searches * restarts if steps > 1 else 0

    def nominal_grid_gradients(self, n_examples: int, epsilons: Sequence[float]) -> int:
        """Nominal gradient evaluations on ``n_examples`` over the grid ``epsilons``.

        ``n_examples × positive epsilons × nominal_gradients()`` for a fixed-budget attack (it
        runs once per positive epsilon), ``n_examples × nominal_gradients()`` for a
        minimum-norm one (one run serves every epsilon).
        """
        per_eps = len([e for e in epsilons if e > 0]) if self.kind is AttackKind.FIXED_BUDGET else 1
        return n_examples * per_eps * self.nominal_gradients()

    @abstractmethod
    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> FixedBudgetOutput | MinimumNormOutput:
        """Attack clean-correct examples ``x`` (n, ...) with labels ``y`` (n,).

        Fixed-budget attacks receive only positive epsilons and return ``(K, n, ...)``;
        minimum-norm attacks receive the whole grid (they may ignore it) and return ``(n, ...)``.
        Runs under ``frozen_eval`` and with gradients enabled.
        """

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        epsilons: Sequence[float],
        warn_units: bool = True,
        log_warnings: bool = True,
    ) -> AttackResult:
        """Attack ``model`` on ``x`` (N, C, H, W) in [0, 1] with labels ``y`` (N,) at every epsilon.

        ``model(x)`` must return float logits ``(N, num_classes)`` (wrap models returning tuples
        or dicts with :func:`attacks.wrappers.select_output`); ``y`` holds integer class indices in
        ``[0, num_classes)``. ``x`` of any floating dtype is cast to the model's dtype (float32
        for float16 / bfloat16 models, which then round their input themselves).

        Warnings are returned in :attr:`AttackResult.warnings`, always, and logged here once:
        epsilons that look like the 0..255 scale (Linf ``>= 1``, L2 above ``sqrt(d)``) before the
        attack unless ``warn_units=False`` (for deliberate "unbounded" budgets), adversarials that
        failed verification after it. ``log_warnings=False`` logs nothing (the caller logs the
        returned warnings, e.g. once per grid instead of once per batch).

        Raises:
            AttackInputError: a contract of :mod:`attacks.contracts` is violated; raised before
                any attack work (at most one clean forward pass has run).
        """
        eps = validate_epsilons(epsilons)
        x, y = validate_inputs(x, y)
        dtype = model_dtype(model, default=x.dtype)
        if dtype in HALF_DTYPES:  # iterate in float32; the model rounds its input (CastInputs)
            model, dtype = CastInputs(model, dtype), torch.float32
        x = x.to(dtype)  # (N, ...) in the attack's dtype
        unit_warnings = epsilon_unit_warnings(eps, self.norm, math.prod(x.shape[1:]))
        if log_warnings and warn_units:
            for message in unit_warnings:
                logger.warning("%s/%s: %s", self.backend, self.name, message)
        if x.shape[0] == 0:
            result = self._empty(x, y, eps)
        else:
            with frozen_eval(model), seeded(self.seed, x.device):
                result = self._attack(model, x, y, eps)
        if log_warnings:
            for message in result.warnings:  # the run's own: failed verifications
                logger.warning("%s", message)
        result.warnings = unit_warnings + result.warnings
        return result

    def settings_for(self, num_classes: int) -> dict[str, Any]:
        """What the attack runs on a model of ``num_classes`` classes beyond :meth:`params`.

        Recorded next to the parameters of every result (rows, sidecar, report): here the
        targets a targeted attack can have (``min(n_target_classes, num_classes - 1)``); the
        AutoAttack cascades add their stages and any substitution made for few classes.
        """
        n_targets = self.params().get("n_target_classes")
        if isinstance(n_targets, int) and not isinstance(n_targets, bool):
            return {"targets": min(n_targets, num_classes - 1)}
        return {}

    def check_classes(self, num_classes: int) -> None:
        """Refuse a model with fewer than :attr:`min_classes` classes, in one line.

        Raises:
            AttackInputError: ``num_classes < min_classes`` (e.g. APGD-T's targeted DLR loss,
                Croce & Hein 2020 eq. 7, reads the 4th largest logit; its reference code fails
                with an ``IndexError`` there); the message ends with :attr:`few_classes_hint`.
        """
        if num_classes < self.min_classes:
            substitute = FEW_CLASS_SUBSTITUTE.get(self.norm.value, "apgd-t-ce")
            text = self.few_classes_hint.replace("{apgd_t_ce}", substitute)
            hint = f"; {text}" if text else ""
            raise AttackInputError(
                f"{self.backend}/{self.name} needs a model with at least {self.min_classes} "
                f"classes (this one has {num_classes}){hint}"
            )

    # -- template internals -------------------------------------------------------------------

    def _empty(self, x: Tensor, y: Tensor, eps: list[float]) -> AttackResult:
        """The result for N = 0: every tensor has its documented shape with N = 0."""
        k_eps = len(eps)
        empty = torch.zeros(k_eps, 0, dtype=torch.bool, device=x.device)  # (K, 0)
        min_norm = None
        if self.kind is AttackKind.MINIMUM_NORM:
            min_norm = torch.zeros(0, dtype=torch.float32, device=x.device)
        return AttackResult(
            epsilons=eps,
            adversarials=x.unsqueeze(0).repeat((k_eps,) + (1,) * x.ndim),  # (K, 0, ...)
            success=empty,
            norms=torch.zeros(k_eps, 0, dtype=x.dtype, device=x.device),
            min_norm=min_norm,
            grad_evals=0,
            predictions=torch.zeros(k_eps, 0, dtype=torch.long, device=x.device),
            verify_failed=empty.clone(),
        )

    def _attack(self, model: nn.Module, x: Tensor, y: Tensor, eps: list[float]) -> AttackResult:
        k_eps, n = len(eps), x.shape[0]
        clean_pred, num_classes = _clean_predictions(model, x, y)  # (N,), after the contracts
        self.check_classes(num_classes)
        todo = (clean_pred == y).nonzero().squeeze(1)  # indices of clean-correct examples
        adversarials = x.unsqueeze(0).repeat((k_eps,) + (1,) * x.ndim)  # (K, N, ...)
        grad_evals = 0
        min_norm: Tensor | None = None
        details: dict[str, Any] | None = None

        if self.kind is AttackKind.FIXED_BUDGET:
            pos = [k for k, e in enumerate(eps) if e > 0]
            if todo.numel() > 0 and pos:
                adv_t, grad_evals, details = self._fixed_budget(
                    model, x[todo], y[todo], [eps[k] for k in pos]
                )  # (K', n, ...)
                for j, k in enumerate(pos):
                    adversarials[k, todo] = adv_t[j].to(x.dtype)
        else:
            min_norm = torch.zeros(n, dtype=torch.float32, device=x.device)
            if todo.numel() > 0:
                norm_t, best, grad_evals = self._minimum_norm(model, x[todo], y[todo], eps)
                min_norm[todo] = norm_t.float()
                for k, e in enumerate(eps):
                    take = expand_like(norm_t <= e, best)  # inf never passes
                    adversarials[k, todo] = torch.where(take, best, x[todo])

        # Verify every adversarial before counting it, then re-classify it.
        verified = torch.ones(k_eps, n, dtype=torch.bool, device=x.device)
        warnings: list[str] = []
        for k, e in enumerate(eps):
            ok = verify_adversarials(adversarials[k], x, e, self.norm)  # (N,)
            if not bool(ok.all()):
                warnings.append(
                    f"{self.backend}/{self.name}: {int((~ok).sum())} of {n} adversarials at "
                    f"eps={e:g} failed verification (outside [0, 1] or the eps ball); counting "
                    "them as not broken"
                )
                adversarials[k] = torch.where(expand_like(ok, x), adversarials[k], x)
                verified[k] = ok
        predictions = torch.stack([_predict(model, adversarials[k]) for k in range(k_eps)])
        success = verified & (predictions != y)  # (K, N)
        # Clean-misclassified examples: adversarial = x is a verified success at every eps.
        # Not broken: the adversarial is x itself (the documented contract, for every kind).
        adversarials = torch.where(expand_like(success, adversarials), adversarials, x.unsqueeze(0))
        predictions = torch.where(success, predictions, y.unsqueeze(0))
        norms = torch.stack(
            [perturbation_norm(adversarials[k] - x, self.norm) for k in range(k_eps)]
        )  # (K, N)
        return AttackResult(
            epsilons=eps,
            adversarials=adversarials,
            success=success,
            norms=norms,
            min_norm=min_norm,
            grad_evals=grad_evals,
            predictions=predictions,
            details=details,
            verify_failed=~verified,
            warnings=warnings,
        )

    def _fixed_budget(
        self, model: nn.Module, x: Tensor, y: Tensor, eps: list[float]
    ) -> tuple[Tensor, int, dict[str, Any] | None]:
        """Run ``_run`` with restarts; per example and eps keep the first successful restart.

        Returns (adversarials (K, n, ...), grad_evals, details). Attacks that restart on their
        own (``restarts_in_run``: APGD, Square, the AutoAttack cascades, the library APGDs) run
        ``_run`` once.
        """
        adv, evals, details = self._run_fixed(model, x, y, eps)  # (K, n, ...)
        if self.restarts_in_run:
            return adv, evals, details
        for _ in range(1, self.restarts):
            broken = self._broken(model, adv, x, y, eps)  # (K, n)
            rem = (~broken).any(dim=0).nonzero().squeeze(1)
            if rem.numel() == 0:
                break
            new, more, _ = self._run_fixed(model, x[rem], y[rem], eps)  # (K, m, ...)
            evals += more
            keep = expand_like(broken[:, rem], new)
            adv[:, rem] = torch.where(keep, adv[:, rem], new)
        return adv, evals, details

    def _run_fixed(
        self, model: nn.Module, x: Tensor, y: Tensor, eps: list[float]
    ) -> tuple[Tensor, int, dict[str, Any] | None]:
        with torch.enable_grad():
            out = self._run(model, x, y, eps)
        if not isinstance(out, FixedBudgetOutput):
            raise TypeError(f"{type(self).__name__}._run must return FixedBudgetOutput")
        expected = (len(eps), *x.shape)
        if tuple(out.adversarials.shape) != expected:
            raise RuntimeError(
                f"{self.backend}/{self.name} returned shape {tuple(out.adversarials.shape)}, "
                f"expected {expected}"
            )
        return out.adversarials.detach().to(x.dtype), out.grad_evals, out.details

    def _broken(
        self, model: nn.Module, adv: Tensor, x: Tensor, y: Tensor, eps: list[float]
    ) -> Tensor:
        """Bool (K, n): adv[k] verified within eps[k] and misclassified."""
        rows = [
            verify_adversarials(adv[k], x, e, self.norm) & (_predict(model, adv[k]) != y)
            for k, e in enumerate(eps)
        ]
        return torch.stack(rows)

    def _minimum_norm(
        self, model: nn.Module, x: Tensor, y: Tensor, eps: list[float]
    ) -> tuple[Tensor, Tensor, int]:
        """Return (norm (n,) float64, inf where not adversarial; best (n, ...); grad_evals)."""
        with torch.enable_grad():
            out = self._run(model, x, y, eps)
        if not isinstance(out, MinimumNormOutput):
            raise TypeError(f"{type(self).__name__}._run must return MinimumNormOutput")
        if tuple(out.adversarials.shape) != tuple(x.shape):
            raise RuntimeError(
                f"{self.backend}/{self.name} returned shape {tuple(out.adversarials.shape)}, "
                f"expected {tuple(x.shape)}"
            )
        best = out.adversarials.detach().to(x.dtype)
        flat = best.reshape(best.shape[0], -1)
        ok = (torch.isfinite(flat) & (flat >= 0) & (flat <= 1)).all(dim=1)
        ok &= _predict(model, torch.where(expand_like(ok, x), best, x)) != y
        if out.found is not None:
            ok &= out.found.to(ok.device)
        best = torch.where(expand_like(ok, x), best, x)
        dist = perturbation_norm(best.double() - x.double(), self.norm)  # (n,) float64
        dist = torch.where(ok, dist, torch.full_like(dist, math.inf))
        return dist, best, out.grad_evals


def _labels(logits: Tensor) -> Tensor:
    """argmax (M,) of logits (M, C); -1 (no class) where a row has a NaN or inf logit."""
    finite = torch.isfinite(logits).all(dim=1)
    return torch.where(finite, logits.argmax(dim=1), torch.full_like(finite, -1, dtype=torch.long))


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor) -> Tensor:
    """Predicted labels (N,), in chunks of PREDICT_BATCH examples; -1 where logits are non-finite.

    A non-finite output at a verified point of the ball is no prediction of the true class, so
    it counts as misclassified (torch's argmax would return the NaN's index, an arbitrary class).
    """
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=x.device)
    return torch.cat([_labels(model(c)) for c in x.split(PREDICT_BATCH)])


@torch.no_grad()
def _clean_predictions(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, int]:
    """Clean predictions (N,) and the number of classes, after the output and label contracts.

    The first chunk's output is checked before anything else runs, so a model returning a tuple,
    dict or wrongly shaped logits fails with the contract's message, not deep inside an attack.
    """
    preds, num_classes = [], 0
    for c in x.split(PREDICT_BATCH):
        logits = check_logits(model(c), c.shape[0])  # (M, C)
        if num_classes and logits.shape[1] != num_classes:
            raise AttackInputError(
                f"the model returns {logits.shape[1]} logits for some inputs and {num_classes} "
                "for others; it must return (N, num_classes) with a fixed num_classes"
            )
        num_classes = logits.shape[1]
        check_clean_logits_finite(logits)
        preds.append(logits.argmax(dim=1))
    check_label_values(y, num_classes)
    return torch.cat(preds), num_classes
