"""Randomized smoothing (evaluations.engine.certify_smoothing), checked against closed forms.

On a linear two-class classifier ``f(x) = argmax(Wx + b)`` the smoothed classifier equals the base
one and ``pA = Phi(margin / (sigma * ||w_y - w_j||))``, so the exact L2 distance to the decision
boundary, ``margin / ||w_y - w_j||``, is ``sigma * Phi^-1(pA)``: every certified radius must be at
most that distance (soundness) and, at n = 100,000, within 10 % of it where pA is in [0.6, 0.99].
The Clopper-Pearson bound equals SciPy's beta quantile; CERTIFY abstains exactly where it is below
1/2. ART's certification of the same model and examples agrees within sampling noise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import beta, norm
from torch import nn

from evaluations.engine.certify_smoothing import (
    SmoothingSettings,
    certified_counts,
    certify,
    clopper_pearson_lower,
    max_certifiable_radius,
    predict,
)
from tests.core_helpers import single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    with single_thread():
        yield


SIGMA = 0.25


def _linear(seed: int = 0, dim: int = 16) -> nn.Module:
    """Two-class linear model on (1, 4, 4) inputs."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(dim, 2))
    with torch.no_grad():
        model[1].weight.normal_()
        model[1].bias.zero_()
    return model.double()


def _points_at_pa(model: nn.Module, pas: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (N, 1, 4, 4) whose class-0 probability under the noise is exactly each pA.

    x = c + t * u with u the unit vector along w_0 - w_1 and c on the boundary: the margin is
    t * ||w_0 - w_1||, so pA = Phi(t / sigma) and the distance to the boundary is |t|.
    """
    w = model[1].weight.detach()  # (2, 16)
    d = w[0] - w[1]
    u = d / d.norm()
    centre = torch.full((16,), 0.5, dtype=torch.float64)
    centre = centre - (centre @ d) / (d @ d) * d  # on the boundary (bias 0)
    ts = torch.tensor([SIGMA * norm.ppf(p) for p in pas], dtype=torch.float64)
    x = centre + ts[:, None] * u  # (N, 16)
    return x.view(-1, 1, 4, 4), ts


def test_clopper_pearson_equals_scipys_beta_quantile() -> None:
    for k, n, alpha in [(5, 10, 0.001), (10, 10, 0.001), (9990, 10_000, 0.001), (61, 100, 0.05)]:
        expected = beta.ppf(alpha, k, n - k + 1)  # the one-sided (1 - alpha) lower bound
        assert clopper_pearson_lower(k, n, alpha) == pytest.approx(expected, rel=1e-9)
        # not the two-sided (1 - alpha) interval, not the normal approximation
        assert clopper_pearson_lower(k, n, alpha) > beta.ppf(alpha / 2, k, n - k + 1)
    assert clopper_pearson_lower(0, 100, 0.001) == 0.0
    # the cap of a perfect vote is alpha ** (1 / n): 3.199 sigma at n = 10^4, alpha = 0.001
    assert max_certifiable_radius(1.0, 10_000, 0.001) == pytest.approx(3.199, abs=1e-3)


def test_linear_radii_are_sound_and_tight_at_n_100000() -> None:
    model = _linear()
    pas = [0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.65, 0.85, 0.75, 0.97]
    x, ts = _points_at_pa(model, pas)
    settings = SmoothingSettings(sigma=SIGMA, n0=100, n=100_000, alpha=0.001, batch_size=20_000)
    cert = certify(model, x, settings)
    assert (cert.prediction == 0).all()  # pA > 0.5: the true (and smoothed) class is 0
    dist = ts.abs()  # exact L2 distance to the boundary
    assert (cert.radius <= dist).all(), (cert.radius, dist)  # soundness
    assert (cert.radius >= 0.9 * dist).all(), cert.radius / dist  # within 10 %
    assert torch.allclose(cert.p_lower, torch.tensor([clopper_pearson_lower(int(c), 100_000, 0.001)
                                                      for c in cert.count], dtype=torch.float64))  # fmt: skip
    assert torch.allclose(cert.radius, SIGMA * torch.from_numpy(norm.ppf(cert.p_lower.numpy())))


def test_abstains_exactly_where_the_lower_bound_is_below_one_half() -> None:
    model = _linear(1)
    pas = [0.5, 0.501, 0.51, 0.52, 0.55, 0.6, 0.49, 0.3]  # near the boundary and beyond it
    x, _ = _points_at_pa(model, pas)
    settings = SmoothingSettings(sigma=SIGMA, n0=100, n=2000, alpha=0.001, batch_size=2000)
    cert = certify(model, x, settings)
    assert cert.abstained.any() and (~cert.abstained).any()
    assert torch.equal(cert.abstained, cert.p_lower < 0.5)
    assert (cert.radius[cert.abstained] == -1).all() and (cert.radius[~cert.abstained] >= 0).all()
    # a point on the far side of the boundary is certified as class 1, never as class 0
    assert int(cert.prediction[-1]) in (1, -1)


def test_certified_counts_need_the_right_class_and_the_radius() -> None:
    model = _linear(2)
    x, _ = _points_at_pa(model, [0.99, 0.9, 0.3])  # the last is class 1
    cert = certify(model, x, SmoothingSettings(sigma=SIGMA, n=5000))
    labels = torch.tensor([0, 0, 0])
    r_hi, r_lo = float(cert.radius[0]), float(cert.radius[1])
    counts = certified_counts(cert, labels, [0.0, (r_lo + r_hi) / 2, r_hi + 1e-9])
    assert counts == [2, 1, 0]  # the wrongly classified point never counts


def test_seed_policy_one_example_does_not_depend_on_the_others() -> None:
    model = _linear(3)
    x, _ = _points_at_pa(model, [0.7, 0.8, 0.9])
    settings = SmoothingSettings(sigma=SIGMA, n=3000, batch_size=500, seed=7)
    full = certify(model, x, settings)
    alone = certify(model, x[2:], settings, indices=[2])
    assert int(alone.count[0]) == int(full.count[2])
    other = certify(model, x, SmoothingSettings(sigma=SIGMA, n=3000, batch_size=500, seed=8))
    assert not torch.equal(other.count, full.count)


def test_noise_is_scaled_by_sigma_in_pixel_space() -> None:
    """The empirical vote share matches Phi(t / sigma) (the wrong sigma would miss it)."""
    model = _linear(4)
    x, _ = _points_at_pa(model, [0.8])
    cert = certify(model, x, SmoothingSettings(sigma=SIGMA, n=40_000, batch_size=40_000))
    share = int(cert.count[0]) / 40_000
    assert abs(share - 0.8) < 5 * math.sqrt(0.8 * 0.2 / 40_000)


def test_predict_returns_the_class_or_abstains() -> None:
    model = _linear(5)
    x, _ = _points_at_pa(model, [0.95, 0.5, 0.05])
    out = predict(model, x, SmoothingSettings(sigma=SIGMA, n=2000, alpha=0.001))
    assert out.tolist()[0] == 0 and out.tolist()[2] == 1 and out.tolist()[1] == -1


def test_agrees_with_arts_randomized_smoothing_within_sampling_noise() -> None:
    """ART's PyTorchRandomizedSmoothing (sample_size = n0, scale = sigma, same alpha and n) on the
    same model and examples: same certified classes; radii within 5 standard deviations of the
    difference of two independent estimates (delta method: sd(pA_hat) / phi(Phi^-1(pA)) * sigma).
    The noise streams differ (ART draws with NumPy), so the comparison is statistical."""
    pytest.importorskip("statsmodels", reason="ART's smoothing certify needs statsmodels")
    rs = pytest.importorskip(
        "art.estimators.certification.randomized_smoothing",
        reason="adversarial-robustness-toolbox (dev extra) is not installed",
    )
    model = _linear(6).float()
    pas = [0.6, 0.75, 0.9, 0.97]
    x, _ = _points_at_pa(model.double(), pas)
    model = model.float()
    x = x.float()
    n = 20_000
    art = rs.PyTorchRandomizedSmoothing(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 4, 4), nb_classes=2,
        device_type="cpu", sample_size=100, scale=SIGMA, alpha=0.001,
    )  # fmt: skip
    np.random.seed(0)
    art_pred, art_radius = art.certify(x.numpy(), n=n, batch_size=5000)
    ours = certify(model, x, SmoothingSettings(sigma=SIGMA, n0=100, n=n, alpha=0.001))
    assert ours.prediction.tolist() == [int(v) for v in art_pred] == [0, 0, 0, 0]
    for p, r_ours, r_art in zip(pas, ours.radius.tolist(), art_radius.tolist(), strict=True):
        sd = math.sqrt(2 * p * (1 - p) / n) / norm.pdf(norm.ppf(p)) * SIGMA
        assert abs(r_ours - r_art) <= 5 * sd, (p, r_ours, r_art, sd)
