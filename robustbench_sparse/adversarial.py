"""Adversarial training: the threat model, crafting training adversarials, and the robust losses.

Three methods, selected by :attr:`AdversarialConfig.method`:

- ``pgd``: PGD adversarial training (Madry et al., "Towards Deep Learning Models Resistant to
  Adversarial Attacks", ICLR 2018): minimise the cross-entropy on PGD adversarials crafted with a
  random start and ``steps`` ascent steps of the cross-entropy.
- ``trades``: TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness and
  Accuracy", ICML 2019): ``CE(f(x), y) + beta * KL(p(x) || p(x'))`` (batch mean), where ``x'``
  maximises that KL term; as in the reference code, ``x'`` starts at ``x + 0.001 * N(0, 1)``
  (the KL gradient is exactly zero at ``x' = x``) and ascends with ``steps`` projected steps.
- ``fast``: "fast" adversarial training (Wong, Rice, Kolter, "Fast is better than free", ICLR
  2020): one FGSM step of ``1.25 * eps`` from a uniform random point of the ball.
- ``gaussian``: Gaussian noise augmentation for randomized smoothing (Cohen, Rosenfeld, Kolter,
  "Certified Adversarial Robustness via Randomized Smoothing", ICML 2019): plain cross-entropy on
  ``x + sigma * N(0, I)``, one fresh draw per example and step, in ``[0, 1]`` pixel space before
  the model's own normalisation, not clipped (the reference ``train.py``). It has no budget
  (``eps`` 0) and no per-epoch PGD validation; the smoothed model is certified by
  :mod:`evaluations.engine.certify_smoothing` at the same sigma.
- ``ibp``: interval bound propagation training (Gowal et al., "On the Effectiveness of Interval
  Bound Propagation for Training Verifiably Robust Models", 2018):
  ``kappa * CE(z(x), y) + (1 - kappa) * CE(z_worst, y)`` with the elided IBP margin bounds of the
  L-infinity box (:mod:`robustbench_sparse.bounds.ibp_training`). Schedule: ``ibp_warmup_epochs``
  of nominal training (eps 0, kappa 1), then eps ramps linearly to ``eps`` over
  ``eps_warmup_epochs`` while kappa falls from 1 to ``ibp_kappa`` (0.5 in Gowal et al.; CROWN-IBP's
  ``kappa = 1 - (1 - kappa_final) * eps_t / eps``). Validated by PGD at ``eps`` like the others;
  certified by :mod:`evaluations.engine.certify_ibp`.

Every iterate is projected by :func:`attacks.norms.clip_to_ball` (ball, then ``[0, 1]``); random
starts come from :func:`attacks.engine.random_start`, cross-entropy input gradients from
:func:`attacks.engine.logits_and_gradient` and ascent directions (sign / normalised gradient)
from :func:`attacks.engine.ascent_direction`: training adversarials satisfy exactly the budget
definition the evaluation attacks are verified against.

BatchNorm while crafting (``bn_mode``, recorded in the checkpoint):

- ``train`` (default): BatchNorm normalises with the *batch* statistics, the way the model is in
  the training forward pass that follows (Madry's and Rice et al.'s PGD-AT code craft in train
  mode). The running statistics are snapshotted before crafting and restored afterwards, so only
  the training forward pass updates them (crafting would otherwise add ``steps`` extra updates
  per batch from intermediate iterates). Dropout, if any, stays active.
- ``eval``: the running statistics (TRADES' reference code crafts in eval mode).

The model's parameters never receive a gradient while crafting (``torch.autograd.grad`` on the
input only), so crafting interacts neither with the optimizer nor with DDP's gradient reducer;
under DDP every rank crafts the adversarials of its own shard with the unwrapped model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.engine import ascent_direction, logits_and_gradient, random_start
from attacks.norms import Norm, clip_to_ball
from attacks.params import EpsilonError, format_epsilon, parse_epsilon
from robustbench_sparse.errors import UserError

__all__ = [
    "AdversarialConfig",
    "AdversarialMethod",
    "BatchNormMode",
    "RobustLoss",
    "craft",
    "crafting_mode",
    "parse_fraction",
    "robust_loss",
    "threat_label",
    "trades_loss",
]


class AdversarialMethod(str, Enum):
    """How training examples are perturbed (``none`` = standard training)."""

    NONE = "none"
    PGD = "pgd"
    TRADES = "trades"
    FAST = "fast"
    GAUSSIAN = "gaussian"
    IBP = "ibp"


class BatchNormMode(str, Enum):
    """BatchNorm statistics while crafting training adversarials (see the module docstring)."""

    TRAIN = "train"
    EVAL = "eval"


def parse_fraction(value: Any, what: str) -> float:
    """A finite number from a float/int or a string such as ``"8/255"`` or ``"0.1"``.

    :func:`attacks.params.parse_epsilon` with this module's messages.

    Raises:
        UserError: not a number, not parseable, or not finite (one line naming ``what``).
    """
    try:
        return parse_epsilon(value, what=what)
    except EpsilonError as err:
        if err.problem == "finite":
            raise UserError(f"{what} must be finite (got {value!r})") from None
        if err.problem == "syntax":
            raise UserError(f"{what}: {value!r} is not a number (use e.g. 0.1 or 8/255)") from None
        raise UserError(str(err)) from None


def _enum(cls: Any, value: Any, what: str) -> Any:
    try:
        return cls(value.strip().lower() if isinstance(value, str) else value)
    except ValueError:
        valid = ", ".join(m.value for m in cls)
        raise UserError(f"{what} {value!r} is unknown; valid: {valid}") from None


@dataclass(frozen=True)
class AdversarialConfig:
    """The training threat model and method (TOML section ``[adversarial]``).

    Attributes:
        method: ``none`` (standard training), ``pgd``, ``trades``, ``fast`` or ``gaussian``.
        norm: ``linf`` or ``l2``; pixel space ``[0, 1]``.
        eps: the training budget in pixel units (``"8/255"`` accepted), > 0 unless ``none``.
        steps: ascent steps of ``pgd`` / ``trades`` (``fast`` always takes 1).
        step_size: absolute step size in pixel units; ``None`` = ``rel_step_size * eps``.
        rel_step_size: step size relative to eps; ``None`` = the method's default (``pgd``
            ``2.5 / steps`` after Madry et al., ``trades`` ``2.5 / steps`` too (0.007 at
            0.031 with 10 steps in the paper is 0.226 ≈ 0.25), ``fast`` 1.25 after Wong et al.).
        trades_beta: TRADES' trade-off ``beta`` (the reference code: 6.0 for CIFAR-10, 1.0 for
            MNIST; default 6.0).
        eps_warmup_epochs: ramp eps linearly from ~0 to ``eps`` over these (fractional) epochs,
            per optimizer step; 0 = the full budget from the first step.
        bn_mode: BatchNorm statistics while crafting, ``train`` or ``eval``.
        val_steps: PGD steps of the per-epoch robust validation accuracy (``None`` = ``steps``;
            at least 10 for ``fast``).
        sigma: ``gaussian``'s noise standard deviation in ``[0, 1]`` pixel units (> 0 there;
            0 and unused by every other method).
        ibp_warmup_epochs: ``ibp``: nominal-only epochs before the eps ramp (Gowal et al.: 2,000
            of 60,000 steps on MNIST).
        ibp_kappa: ``ibp``: the final nominal-loss weight kappa (Gowal et al. 0.5).
    """

    method: AdversarialMethod = AdversarialMethod.NONE
    norm: Norm = Norm.LINF
    eps: float = 0.0
    steps: int = 10
    step_size: float | None = None
    rel_step_size: float | None = None
    trades_beta: float = 6.0
    eps_warmup_epochs: float = 0.0
    bn_mode: BatchNormMode = BatchNormMode.TRAIN
    val_steps: int | None = None
    sigma: float = 0.0
    ibp_warmup_epochs: float = 0.0
    ibp_kappa: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "method", _enum(AdversarialMethod, self.method, "adversarial method")
        )
        object.__setattr__(self, "norm", _enum(Norm, self.norm, "adversarial norm"))
        if self.norm is Norm.L1:  # no L1 ascent step for training (attacks.engine)
            raise UserError("adversarial norm 'l1' is for evaluation only; train with linf or l2")
        object.__setattr__(self, "bn_mode", _enum(BatchNormMode, self.bn_mode, "bn_mode"))
        object.__setattr__(self, "eps", parse_fraction(self.eps, "adversarial eps"))
        for name in ("step_size", "rel_step_size"):
            value = getattr(self, name)
            if value is not None:
                value = parse_fraction(value, f"adversarial {name}")
                if value <= 0:
                    raise UserError(f"adversarial {name} must be > 0 (got {value})")
                object.__setattr__(self, name, value)
        if self.step_size is not None and self.rel_step_size is not None:
            raise UserError(
                "give the adversarial step size absolute (--adv-step-size) or relative "
                "(--adv-rel-step-size), not both"
            )
        for name in ("trades_beta", "eps_warmup_epochs"):
            object.__setattr__(self, name, parse_fraction(getattr(self, name), name))
        for name in ("steps", "val_steps"):
            value = getattr(self, name)
            if value is None and name == "val_steps":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"adversarial {name} must be an integer >= 1 (got {value!r})")
        if self.trades_beta < 0:
            raise UserError(f"trades_beta must be >= 0 (got {self.trades_beta})")
        if self.eps_warmup_epochs < 0:
            raise UserError(f"eps_warmup_epochs must be >= 0 (got {self.eps_warmup_epochs})")
        self._check_sigma()
        self._check_ibp()
        if self.has_budget and not self.eps > 0:
            raise UserError(
                f"adversarial training ({self.method.value}) needs --adv-eps > 0 (got {self.eps})"
            )
        if not self.enabled and self.eps < 0:
            raise UserError(f"adversarial eps must be >= 0 (got {self.eps})")
        if self.enabled:
            self.check_budget(None)  # the linf scale needs no input size; l2 is checked with it

    def _check_sigma(self) -> None:
        """``sigma`` > 0 for ``gaussian`` (which takes no eps); unset for every other method."""
        object.__setattr__(self, "sigma", parse_fraction(self.sigma, "noise sigma"))
        if self.method is not AdversarialMethod.GAUSSIAN:
            if self.sigma != 0:
                raise UserError(
                    f"--noise-sigma ([adversarial] sigma) is for --adversarial gaussian only "
                    f"(got sigma {self.sigma:g} with method {self.method.value})"
                )
            return
        if not 0 < self.sigma <= 4:
            raise UserError(
                f"Gaussian noise training needs --noise-sigma in (0, 4] pixel units, e.g. 0.25 "
                f"(got {self.sigma:g})"
            )
        if self.eps != 0 or self.eps_warmup_epochs != 0:
            raise UserError(
                "Gaussian noise training takes --noise-sigma, not --adv-eps / --adv-eps-warmup "
                "(it has no attack budget)"
            )

    def _check_ibp(self) -> None:
        """``ibp``: linf only, kappa in [0, 1]; its two settings unset for every other method."""
        for name in ("ibp_warmup_epochs", "ibp_kappa"):
            object.__setattr__(self, name, parse_fraction(getattr(self, name), name))
        if self.method is not AdversarialMethod.IBP:
            if self.ibp_warmup_epochs != 0 or self.ibp_kappa != 0.5:
                raise UserError(
                    "--ibp-warmup / --ibp-kappa ([adversarial] ibp_warmup_epochs / ibp_kappa) are "
                    f"for --adversarial ibp only (got method {self.method.value})"
                )
            return
        if self.norm is not Norm.LINF:
            raise UserError("IBP training bounds the L-infinity box only; use --adv-norm linf")
        if not 0 <= self.ibp_kappa <= 1 or self.ibp_warmup_epochs < 0:
            raise UserError(
                f"IBP needs --ibp-kappa in [0, 1] and --ibp-warmup >= 0 epochs (got kappa "
                f"{self.ibp_kappa:g}, warm-up {self.ibp_warmup_epochs:g})"
            )

    def check_warmup(self, epochs: int) -> None:
        """Refuse an eps warm-up that does not end before the last of ``epochs``.

        The checkpoint is labelled with ``eps``; a warm-up of ``epochs`` or more would train
        every step (but at most the last) below it.

        Raises:
            UserError: ``eps_warmup_epochs >= epochs`` (one line naming both settings).
        """
        if self.ibp_warmup_epochs + self.eps_warmup_epochs >= epochs > 0 and self.ibp_warmup_epochs:
            raise UserError(
                f"IBP warm-up ({self.ibp_warmup_epochs:g}) plus eps ramp "
                f"({self.eps_warmup_epochs:g}) epochs do not end before training does ({epochs} "
                "epochs); lower --ibp-warmup / --adv-eps-warmup or raise --epochs"
            )
        if self.eps_warmup_epochs > 0 and self.eps_warmup_epochs >= epochs:
            reached = self.eps * min(1.0, epochs / self.eps_warmup_epochs)
            how = "only at its last step" if reached >= self.eps else f"{reached:.3g} at most"
            raise UserError(
                f"eps warm-up of {self.eps_warmup_epochs:g} epochs does not end before training "
                f"does ({epochs} epochs): the model would be labelled eps "
                f"{format_epsilon(self.eps, style='training')} but reach {how}; lower "
                "--adv-eps-warmup ([adversarial] eps_warmup_epochs) below --epochs or raise --epochs"
            )

    def check_budget(self, input_shape: Sequence[int] | None) -> None:
        """Refuse a training budget in the wrong units for inputs in ``[0, 1]``, before any step.

        From ``eps = 0.5`` (linf) or ``0.5 * sqrt(C*H*W)`` (l2: half the diameter of the input
        cube) every input is within ``eps`` of the mid-grey image, so any model's robust accuracy
        is at most that of always predicting one class and training ends at chance; such values
        are usually budgets on the 0..255 scale (``8`` for ``8/255``). An absolute step size of
        the whole cube's extent (``>= 1`` linf, ``>= sqrt(C*H*W)`` l2) is refused the same way.
        ``input_shape`` ``None`` checks the linf budget only (it needs no size).

        Raises:
            UserError: one line with the limit and, where it fits, the ``k/255`` reading.
        """
        if not self.has_budget or (self.norm is not Norm.LINF and input_shape is None):
            return
        dim = math.prod(int(v) for v in input_shape) if input_shape is not None else 1
        extent = 1.0 if self.norm is Norm.LINF else math.sqrt(dim)
        where = "" if self.norm is Norm.LINF else f" (inputs of {dim} values)"
        if self.eps >= 0.5 * extent:
            limit = "0.5" if self.norm is Norm.LINF else f"0.5 x sqrt({dim}) = {0.5 * extent:.4g}"
            raise UserError(
                f"adversarial eps {self.eps:g} ({self.norm.value}) on [0, 1] pixels{where} is "
                f"not below {limit}: every input is then within eps of the mid-grey image and "
                f"training ends at chance; {_scale_hint(self.eps)} (--adv-eps, [adversarial] eps)"
            )
        if self.step_size is not None and self.step_size >= extent:
            raise UserError(
                f"adversarial step size {self.step_size:g} ({self.norm.value}) spans the whole "
                f"[0, 1] input space{where}; {_scale_hint(self.step_size)} (--adv-step-size, "
                "[adversarial] step_size)"
            )

    @property
    def enabled(self) -> bool:
        """True unless ``method == "none"``."""
        return self.method is not AdversarialMethod.NONE

    @property
    def has_budget(self) -> bool:
        """True for the methods trained against an eps ball (validated by PGD at ``eps``);
        False for ``none`` and ``gaussian`` (noise at ``sigma``, no budget)."""
        return self.enabled and self.method is not AdversarialMethod.GAUSSIAN

    @property
    def effective_steps(self) -> int:
        """Ascent steps actually taken (``fast``: 1, ``gaussian`` and ``ibp``: 0)."""
        if self.method in (AdversarialMethod.GAUSSIAN, AdversarialMethod.IBP):
            return 0
        return 1 if self.method is AdversarialMethod.FAST else self.steps

    @property
    def effective_val_steps(self) -> int:
        """PGD steps of the robust validation accuracy."""
        if self.val_steps is not None:
            return self.val_steps
        return max(self.effective_steps, 10)

    def stepsize(self, eps: float) -> float:
        """Absolute step size at budget ``eps`` (pixel units)."""
        if self.method is AdversarialMethod.IBP:
            return 0.0  # no ascent
        if self.step_size is not None:
            return self.step_size
        if self.rel_step_size is not None:
            return self.rel_step_size * eps
        if self.method is AdversarialMethod.FAST:
            return 1.25 * eps
        return 2.5 / self.effective_steps * eps

    def eps_at(self, step: int, steps_per_epoch: int) -> float:
        """Budget at optimizer step ``step`` (0-based): linear warm-up, then ``eps``; ``ibp``:
        0 for its first ``ibp_warmup_epochs``, then the ramp."""
        if self.method is AdversarialMethod.IBP:
            step -= round(self.ibp_warmup_epochs * steps_per_epoch)
            if step < 0:
                return 0.0
        if self.eps_warmup_epochs <= 0:
            return self.eps
        ramp = self.eps_warmup_epochs * steps_per_epoch
        return self.eps * min(1.0, (step + 1) / ramp)

    def record(self, reached: float | None = None) -> dict[str, Any]:
        """The threat model as stored in checkpoints (every value resolved).

        ``reached``: the budget of the last training step so far (the eps warm-up); a checkpoint
        saved before the warm-up ended records it as ``eps_reached`` and says so in its label.
        """
        below = self.enabled and reached is not None and reached < self.eps
        label = threat_label(
            self.method.value,
            self.norm.value,
            self.eps,
            self.effective_steps,
            self.trades_beta if self.method is AdversarialMethod.TRADES else None,
            sigma=self.sigma,
        )
        if below:
            label += (
                f" [eps warm-up: reached {format_epsilon(float(reached or 0), style='training')}]"
            )
        return {
            "method": self.method.value,
            "norm": self.norm.value,
            "eps": self.eps,
            "steps": self.effective_steps if self.enabled else 0,
            "step_size": self.stepsize(self.eps) if self.has_budget else 0.0,
            "rel_step_size": self.stepsize(self.eps) / self.eps if self.has_budget else 0.0,
            "trades_beta": self.trades_beta if self.method is AdversarialMethod.TRADES else None,
            "eps_warmup_epochs": self.eps_warmup_epochs,
            "bn_mode": self.bn_mode.value,
            "val_steps": self.effective_val_steps if self.has_budget else 0,
            "sigma": self.sigma if self.method is AdversarialMethod.GAUSSIAN else None,
            **(
                {"ibp_warmup_epochs": self.ibp_warmup_epochs, "ibp_kappa": self.ibp_kappa}
                if self.method is AdversarialMethod.IBP
                else {}
            ),
            "eps_reached": float(reached)
            if below and reached is not None
            else (self.eps if self.enabled else 0.0),
            "label": label,
        }


def _scale_hint(value: float) -> str:
    """``"did you mean 8/255 = 0.03137?"`` for a value on the 0..255 scale, else what to use."""
    if value >= 1:
        return f"did you mean {value:g}/255 = {value / 255:.4g}?"
    return "use a budget in [0, 1] pixel units well below that, e.g. 0.3 (MNIST) or 8/255"


def threat_label(
    method: str,
    norm: str,
    eps: float,
    steps: int,
    beta: float | None = None,
    *,
    sigma: float | None = None,
) -> str:
    """Human label of a training method: ``"standard"``, ``"AT (linf 0.1, PGD-10)"``, ...

    ``method`` is ``none`` / ``pgd`` / ``trades`` / ``fast`` / ``gaussian`` (``"Gaussian noise
    (σ 0.25)"``, from ``sigma``); anything else is shown as is.
    """
    if method in ("none", "", None):
        return "standard"
    if method == "gaussian":
        return f"Gaussian noise (σ {float(sigma or 0):g})"
    where = f"{norm} {format_epsilon(eps, style='training')}"
    if method == "pgd":
        return f"AT ({where}, PGD-{steps})"
    if method == "trades":
        b = f", beta {beta:g}" if beta is not None else ""
        return f"TRADES ({where}, PGD-{steps}{b})"
    if method == "fast":
        return f"fast AT ({where}, FGSM-RS)"
    if method == "ibp":
        return f"IBP ({where})"
    return f"{method} ({where})"


@contextmanager
def crafting_mode(model: nn.Module, bn_mode: BatchNormMode) -> Iterator[None]:
    """Model state while crafting: eval mode, or train mode with BatchNorm buffers restored after.

    Parameters keep their ``requires_grad`` (crafting differentiates wrt the input only).
    """
    modes = [(m, m.training) for m in model.modules()]
    saved: list[tuple[Tensor, Tensor]] = []
    if bn_mode is BatchNormMode.EVAL:
        model.eval()
    else:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase):
                for buf in m.buffers(recurse=False):
                    saved.append((buf, buf.detach().clone()))
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)
        for m, training in modes:
            m.training = training


def _kl_gradient(model: nn.Module, x_adv: Tensor, p_clean: Tensor) -> Tensor:
    """Gradient of ``sum_i KL(p_clean_i || softmax(model(x_adv_i)))`` wrt ``x_adv`` (M, ...)."""
    with torch.enable_grad():
        xg = x_adv.detach().requires_grad_(True)
        log_q = F.log_softmax(model(xg).float(), dim=1)
        loss = F.kl_div(log_q, p_clean, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xg)
    return grad.detach()


def craft(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: AdversarialConfig,
    eps: float,
    *,
    clean_logits: Tensor | None = None,
) -> Tensor:
    """Training adversarials of ``x`` (N, C, H, W) in [0, 1] with labels ``y`` (N,) at ``eps``.

    Runs in the model's current mode (wrap in :func:`crafting_mode`); returns a detached tensor
    shaped like ``x``, inside the ``eps`` ball of ``config.norm`` and ``[0, 1]`` (every iterate is
    :func:`attacks.norms.clip_to_ball`-projected). ``trades`` needs ``clean_logits`` (N, classes):
    its ascent maximises ``KL(softmax(clean_logits) || softmax(model(x')))``.

    Raises:
        ValueError: ``config.method`` is ``none``, or ``trades`` without ``clean_logits``.
    """
    if not config.enabled:
        raise ValueError("craft() needs an adversarial method other than 'none'")
    n = x.shape[0]
    x = x.detach()
    eps_t = torch.full((n,), eps, dtype=x.dtype, device=x.device)
    step = config.stepsize(eps)
    if config.method is AdversarialMethod.TRADES:
        if clean_logits is None:
            raise ValueError("TRADES crafting needs the clean logits")
        p_clean = F.softmax(clean_logits.detach().float(), dim=1)  # (N, classes)
        adv = clip_to_ball(x + 0.001 * torch.randn_like(x), x, eps_t, config.norm)
        for _ in range(config.effective_steps):
            grad = _kl_gradient(model, adv, p_clean)
            adv = clip_to_ball(
                adv + step * ascent_direction(grad, config.norm), x, eps_t, config.norm
            )
        return adv.detach()
    adv = random_start(x, eps_t, config.norm)  # (N, ...) uniform in the ball, in [0, 1]
    for _ in range(config.effective_steps):
        _, grad = logits_and_gradient(model, adv, y)
        adv = clip_to_ball(adv + step * ascent_direction(grad, config.norm), x, eps_t, config.norm)
    return adv.detach()


def trades_loss(
    logits_clean: Tensor,
    logits_adv: Tensor,
    y: Tensor,
    beta: float,
    *,
    label_smoothing: float = 0.0,
) -> Tensor:
    """TRADES' loss ``CE(f(x), y) + beta * KL(p(x) || p(x'))``, both terms batch means.

    ``logits_clean``, ``logits_adv``: (N, classes); ``y``: (N,). The KL term is the reference
    code's ``KLDivLoss(reduction="sum")(log_softmax(f(x')), softmax(f(x))) / N``; both
    distributions carry gradients (as in the reference implementation).
    """
    n = max(int(y.shape[0]), 1)
    natural = F.cross_entropy(logits_clean, y, label_smoothing=label_smoothing)
    robust = (
        F.kl_div(
            F.log_softmax(logits_adv.float(), dim=1),
            F.softmax(logits_clean.float(), dim=1),
            reduction="sum",
        )
        / n
    )
    return natural + beta * robust


@dataclass
class RobustLoss:
    """What :func:`robust_loss` returns: the loss to minimise and the logits for the statistics."""

    loss: Tensor  # scalar
    logits_clean: Tensor  # (N, classes)
    logits_adv: Tensor  # (N, classes)


def robust_loss(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: AdversarialConfig,
    eps: float,
    *,
    forward: nn.Module | None = None,
    label_smoothing: float = 0.0,
) -> RobustLoss:
    """Craft adversarials of ``x`` (N, ...) with ``model`` and return the method's training loss.

    ``forward`` is the module of the training forward pass (the DDP wrapper; default ``model``).
    ``pgd`` / ``fast``: ``CE(forward(x'), y)``; ``trades``: :func:`trades_loss`; ``gaussian``:
    ``CE(forward(x + sigma * N(0, I)), y)`` (``eps`` unused; the global torch RNG draws the noise). The clean logits
    of ``pgd`` / ``fast`` come from a no-grad pass in the crafting BatchNorm mode (statistics).
    Call under the caller's autocast context; parameters get gradients only from ``loss``.
    """
    fwd = forward if forward is not None else model
    if config.method is AdversarialMethod.IBP:
        from robustbench_sparse.bounds.ibp_training import ibp_kappa, ibp_training_loss

        kappa = ibp_kappa(eps, config.eps, config.ibp_kappa)
        loss, logits, worst = ibp_training_loss(
            model, x, y, eps, kappa, forward=fwd, label_smoothing=label_smoothing
        )
        return RobustLoss(loss, logits, worst)
    with crafting_mode(model, config.bn_mode):
        with torch.no_grad():
            clean = model(x)
        if config.method is AdversarialMethod.GAUSSIAN:  # Cohen et al.: no clipping
            x_adv = (x + config.sigma * torch.randn_like(x)).detach()
        else:
            x_adv = craft(model, x, y, config, eps, clean_logits=clean)
    if config.method is AdversarialMethod.TRADES:
        logits = fwd(x)
        logits_adv = fwd(x_adv)
        loss = trades_loss(
            logits, logits_adv, y, config.trades_beta, label_smoothing=label_smoothing
        )
        return RobustLoss(loss, logits, logits_adv)
    logits_adv = fwd(x_adv)
    loss = F.cross_entropy(logits_adv, y, label_smoothing=label_smoothing)
    return RobustLoss(loss, clean, logits_adv)
