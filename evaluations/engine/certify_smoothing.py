"""Randomized smoothing: Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via
Randomized Smoothing", ICML 2019 (reference code ``locuslab/smoothing``, ``code/core.py``).

The smoothed classifier is ``g(x) = argmax_c P[f(x + d) = c]`` with ``d ~ N(0, sigma^2 I)`` in
``[0, 1]`` pixel space (before the model's own normalisation layer; the noisy inputs are not
clipped). :func:`certify` is the paper's CERTIFY, per example:

1. count the base model's hard (argmax) votes over ``n0`` noisy copies; the top class is the
   guess ``c_A``;
2. count votes over ``n`` *fresh* noisy copies; ``n_A`` is the count of ``c_A``;
3. ``pA_lower``: the one-sided ``(1 - alpha)`` Clopper-Pearson lower bound on ``n_A / n``
   (``scipy.stats.binomtest(n_A, n, alternative="greater").proportion_ci(1 - alpha, "exact")``);
4. abstain (prediction ``-1``, radius ``-1``) if ``pA_lower < 0.5``, else return ``c_A`` and the
   L2 radius ``sigma * Phi^-1(pA_lower)`` (``scipy.stats.norm.ppf``).

With probability at least ``1 - alpha`` (per example) the certificate is right: ``g`` predicts
``c_A`` everywhere within the radius. :func:`predict` is the paper's PREDICT (two-sided binomial
test ``scipy.stats.binomtest(n1, n1 + n2, 0.5)`` of the top two counts; abstain when its p-value
exceeds ``alpha``).

Seed policy: the noise of example ``index`` is drawn from its own ``torch.Generator`` on the
model's device, seeded with ``seed * 1_000_003 + 2 * index`` for the selection draw and
``... + 2 * index + 1`` for the estimation draw (PREDICT uses the estimation seed), where
``index`` is the example's index in the evaluated split. A certificate therefore does not depend
on which other examples are certified (``--limit``) or their order; it does depend on
``batch_size`` and the device (they change how the stream is cut), so compare runs with different
batch sizes or devices by distribution, not bit for bit.

The model runs in eval mode under ``torch.inference_mode`` (train-mode BatchNorm would couple the
votes of a batch and break the i.i.d. sampling the bound assumes). The noise is drawn in batches of
``min(batch_size, remaining)`` copies of one example, as in the reference code.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from scipy.stats import binomtest, norm
from torch import Tensor, nn

__all__ = [
    "SmoothingCertificate",
    "SmoothingSettings",
    "certified_counts",
    "certify",
    "clopper_pearson_lower",
    "max_certifiable_radius",
    "noisy_votes",
    "predict",
]

logger = logging.getLogger(__name__)

_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class SmoothingSettings:
    """CERTIFY's parameters (the paper's defaults except ``n``: 100,000 there, 10,000 here).

    Attributes:
        sigma: noise standard deviation in ``[0, 1]`` pixel units (> 0).
        n0: selection samples per example (>= 1).
        n: estimation samples per example (>= 1).
        alpha: failure probability of each certificate, in (0, 1).
        batch_size: noisy copies per forward pass (speed and memory only).
        seed: the base seed of the noise (see the module docstring).
    """

    sigma: float
    n0: int = 100
    n: int = 10_000
    alpha: float = 0.001
    batch_size: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be > 0 (got {self.sigma})")
        if self.n0 < 1 or self.n < 1 or self.batch_size < 1:
            raise ValueError("n0, n and batch_size must be >= 1")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1) (got {self.alpha})")


@dataclass(frozen=True)
class SmoothingCertificate:
    """What :func:`certify` returns for ``N`` examples (CPU tensors).

    Attributes:
        prediction: (N,) int64, the certified class ``c_A``; ``-1`` where it abstained.
        radius: (N,) float64, the certified L2 radius in pixel units; ``-1`` where it abstained.
        count: (N,) int64, ``n_A``: estimation votes for ``c_A`` (out of ``n``).
        p_lower: (N,) float64, the Clopper-Pearson lower bound on ``pA``.
    """

    prediction: Tensor
    radius: Tensor
    count: Tensor
    p_lower: Tensor

    @property
    def abstained(self) -> Tensor:
        """(N,) bool, True where CERTIFY abstained."""
        return self.prediction < 0


def clopper_pearson_lower(count: int, n: int, alpha: float) -> float:
    """One-sided ``(1 - alpha)`` Clopper-Pearson lower confidence bound on ``count / n``.

    SciPy's exact interval of ``binomtest(count, n, alternative="greater")`` (``0`` when
    ``count == 0``); equal to the ``alpha`` quantile of ``Beta(count, n - count + 1)``.
    """
    ci = binomtest(int(count), int(n), alternative="greater").proportion_ci(
        confidence_level=1 - alpha, method="exact"
    )
    return float(ci.low)


def max_certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can return with ``n`` samples (every vote for ``c_A``)."""
    return sigma * float(norm.ppf(clopper_pearson_lower(n, n, alpha)))


def _generator(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


@torch.inference_mode()
def noisy_votes(
    model: nn.Module,
    x: Tensor,
    num: int,
    sigma: float,
    *,
    num_classes: int,
    batch_size: int,
    generator: torch.Generator,
) -> Tensor:
    """Hard votes of ``model`` over ``num`` copies of one input ``x`` (C, H, W) plus noise.

    The noise ``sigma * N(0, I)`` is drawn from ``generator`` on ``x``'s device, in batches of
    ``min(batch_size, remaining)`` copies. Returns (num_classes,) int64 counts on the CPU.
    """
    counts = torch.zeros(num_classes, dtype=torch.int64, device=x.device)
    remaining = num
    while remaining > 0:
        m = min(batch_size, remaining)
        batch = x.unsqueeze(0).expand(m, *x.shape)  # (m, C, H, W)
        noise = torch.randn(batch.shape, generator=generator, device=x.device, dtype=x.dtype)
        votes = model(batch + sigma * noise).argmax(dim=1)  # (m,)
        counts += torch.bincount(votes, minlength=num_classes)[:num_classes]
        remaining -= m
    return counts.cpu()


def _model_device(model: nn.Module) -> torch.device:
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def _num_classes(model: nn.Module, x: Tensor) -> int:
    with torch.inference_mode():
        return int(model(x[:1]).shape[1])


def certify(
    model: nn.Module,
    x: Tensor,
    settings: SmoothingSettings,
    *,
    indices: Sequence[int] | None = None,
) -> SmoothingCertificate:
    """CERTIFY (Cohen et al. 2019, Algorithm 1) for each input of ``x`` (N, C, H, W) in [0, 1].

    ``indices``: each example's index in its split (the noise seed; default ``0..N-1``). The
    model is put in eval mode (and left there); ``x`` is moved to the model's device.
    """
    model.eval()
    device = _model_device(model)
    x = x.to(device)
    idx = list(range(x.shape[0])) if indices is None else [int(i) for i in indices]
    if len(idx) != x.shape[0]:
        raise ValueError(f"{len(idx)} indices for {x.shape[0]} inputs")
    classes = _num_classes(model, x) if x.shape[0] else 0
    s = settings
    pred, radius, count, lower = [], [], [], []
    for i, xi in zip(idx, x, strict=True):
        base = s.seed * _SEED_STRIDE + 2 * i
        sel = noisy_votes(
            model, xi, s.n0, s.sigma, num_classes=classes, batch_size=s.batch_size,
            generator=_generator(device, base),
        )  # fmt: skip
        c_a = int(sel.argmax())
        est = noisy_votes(
            model, xi, s.n, s.sigma, num_classes=classes, batch_size=s.batch_size,
            generator=_generator(device, base + 1),
        )  # fmt: skip
        n_a = int(est[c_a])
        p_low = clopper_pearson_lower(n_a, s.n, s.alpha)
        abstain = p_low < 0.5
        pred.append(-1 if abstain else c_a)
        radius.append(-1.0 if abstain else s.sigma * float(norm.ppf(p_low)))
        count.append(n_a)
        lower.append(p_low)
    return SmoothingCertificate(
        prediction=torch.tensor(pred, dtype=torch.int64),
        radius=torch.tensor(radius, dtype=torch.float64),
        count=torch.tensor(count, dtype=torch.int64),
        p_lower=torch.tensor(lower, dtype=torch.float64),
    )


def predict(
    model: nn.Module,
    x: Tensor,
    settings: SmoothingSettings,
    *,
    indices: Sequence[int] | None = None,
) -> Tensor:
    """PREDICT (Cohen et al. 2019): the smoothed class of each input of ``x`` (N, C, H, W).

    ``n`` votes; the top two counts ``n1 >= n2`` are tested two-sided against ``p = 1/2``
    (``scipy.stats.binomtest``); returns (N,) int64 classes, ``-1`` where the p-value > alpha.
    """
    model.eval()
    device = _model_device(model)
    x = x.to(device)
    idx = list(range(x.shape[0])) if indices is None else [int(i) for i in indices]
    classes = _num_classes(model, x) if x.shape[0] else 0
    s, out = settings, []
    for i, xi in zip(idx, x, strict=True):
        votes = noisy_votes(
            model, xi, s.n, s.sigma, num_classes=classes, batch_size=s.batch_size,
            generator=_generator(device, s.seed * _SEED_STRIDE + 2 * i + 1),
        )  # fmt: skip
        top = torch.topk(votes, k=min(2, classes))
        n1 = int(top.values[0])
        n2 = int(top.values[1]) if classes > 1 else 0
        p_value = binomtest(n1, n1 + n2, 0.5).pvalue if n1 + n2 > 0 else 1.0
        out.append(int(top.indices[0]) if p_value <= s.alpha else -1)
    return torch.tensor(out, dtype=torch.int64)


def certified_counts(
    cert: SmoothingCertificate, labels: Tensor, radii: Sequence[float]
) -> list[int]:
    """Examples certified correct at each L2 radius: prediction == label and radius >= r.

    Abstentions count as wrong (``analyze.py`` of the reference). ``labels``: (N,).
    """
    correct = (cert.prediction == labels.cpu()) & ~cert.abstained  # (N,)
    return [int((correct & (cert.radius >= float(r))).sum()) for r in radii]
