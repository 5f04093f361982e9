"""Native FMN (attacks/fmn.py): invariants, determinism, and agreement with adv-lib's fmn."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from attacks import AttackConfigError, Norm, get_attack, perturbation_norm
from attacks.fmn import FMNParams, fmn
from tests.attack_helpers import Digits, digits

GRID = {Norm.LINF: [0.0, 0.05, 0.1, 0.2, 0.5], Norm.L2: [0.0, 0.5, 1.0, 2.0, 4.0]}


@pytest.fixture(scope="module")
def data() -> Digits:
    return digits()


def test_alpha_schedule() -> None:
    assert FMNParams().alphas() == (1.0, 0.01)
    assert FMNParams(alpha_init=10.0, alpha_final=0.5).alphas() == (10.0, 0.5)


@pytest.mark.parametrize("name", ["fmn", "fmn-l2"])
def test_invariants(data: Digits, name: str) -> None:
    attack = get_attack(name, steps=30)
    eps = GRID[attack.norm]
    x, y = data.x[:80], data.y[:80]
    result = attack(data.model, x, y, epsilons=eps)
    clean = (data.model(x).argmax(1) == y).float().mean().item()
    acc = result.robust_accuracy()
    assert acc[0] == pytest.approx(clean)  # eps = 0: clean accuracy
    assert all(b <= a for a, b in itertools.pairwise(acc))  # minimum norm: monotone
    for k, e in enumerate(eps):
        adv = result.adversarials[k]
        assert bool(((adv >= 0) & (adv <= 1)).all())
        assert bool((perturbation_norm(adv - x, attack.norm) <= e * (1 + 1e-6) + 1e-6).all())
    assert result.min_norm is not None
    assert bool(torch.isfinite(result.min_norm[result.success[-1]]).all())
    n_correct = round(clean * x.shape[0])
    assert result.grad_evals == 30 * n_correct  # one forward+backward per example and step


def test_deterministic_without_global_rng_change(data: Digits) -> None:
    x, y = data.x[:40], data.y[:40]
    before = torch.random.get_rng_state()
    a = get_attack("fmn", steps=20)(data.model, x, y, epsilons=[0.1])
    b = get_attack("fmn", steps=20)(data.model, x, y, epsilons=[0.1])
    assert torch.equal(torch.random.get_rng_state(), before)
    assert a.min_norm is not None and b.min_norm is not None
    assert torch.equal(a.min_norm, b.min_norm)


def test_more_steps_do_not_lose_much(data: Digits) -> None:
    x, y = data.x[:100], data.y[:100]
    ok = data.model(x).argmax(1) == y
    x, y = x[ok], y[ok]
    short = fmn(data.model, x, y, norm=Norm.LINF, params=FMNParams(steps=20))
    long = fmn(data.model, x, y, norm=Norm.LINF, params=FMNParams(steps=100))
    assert bool(torch.isfinite(long.norms).all())  # Linf FMN breaks every digit
    assert float(long.norms.median()) <= float(short.norms.median()) * 1.05


def test_box_aware_steps_past_saturated_pixels(data: Digits) -> None:
    """The published L2 rule stalls on saturated digits; the box-aware gradient does not."""
    x, y = data.x[:100], data.y[:100]
    ok = data.model(x).argmax(1) == y
    x, y = x[ok], y[ok]
    paper = fmn(data.model, x, y, norm=Norm.L2, params=FMNParams(steps=100, box_aware=False))
    aware = fmn(data.model, x, y, norm=Norm.L2, params=FMNParams(steps=100))
    assert float(torch.isfinite(paper.norms).float().mean()) < 0.6  # measured 0.43 on 199 digits
    assert bool(torch.isfinite(aware.norms).all())
    both = torch.isfinite(paper.norms)
    assert float(aware.norms[both].median()) <= float(paper.norms[both].median()) * 1.05


def test_bad_parameters() -> None:
    with pytest.raises(AttackConfigError, match="gamma_init"):
        FMNParams(gamma_init=1.5)
    with pytest.raises(AttackConfigError, match="alpha_init"):
        get_attack("fmn-l2", alpha_init=0)
    with pytest.raises(AttackConfigError, match="box_aware"):
        FMNParams(box_aware=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2])
def test_median_minimal_norm_within_5_percent_of_adv_lib(data: Digits, norm: Norm) -> None:
    """Issue 11's criterion, at equal steps (100) on 200 digits, as published (``box_aware=False``).

    Measured: identical medians (Linf 0.1083, L2 0.6481 over the examples found) and identical
    success; L2 FMN finds adversarials for only part of the digits in both implementations (the
    published algorithm stalls before the first adversarial on saturated pixels; see attacks/fmn.py).
    """
    attacks = pytest.importorskip("adv_lib.attacks")
    x, y = data.x[:200], data.y[:200]
    ok = data.model(x).argmax(1) == y
    x, y = x[ok], y[ok]
    ours = fmn(data.model, x, y, norm=norm, params=FMNParams(steps=100, box_aware=False))
    p = math.inf if norm is Norm.LINF else 2.0
    adv = attacks.fmn(data.model, x, y, norm=p, steps=100)
    with torch.no_grad():
        found = data.model(adv).argmax(1) != y
    ref = torch.where(
        found, perturbation_norm(adv - x, norm), torch.full_like(ours.norms, math.inf)
    )
    assert abs(torch.isfinite(ours.norms).float().mean() - found.float().mean()) <= 0.02
    both = torch.isfinite(ours.norms) & found
    ours_med, ref_med = float(ours.norms[both].median()), float(ref[both].median())
    assert abs(ours_med - ref_med) <= 0.05 * ref_med, (ours_med, ref_med)
    assert float(ours.norms.median()) == pytest.approx(float(ref.median()), rel=0.05)


class _SqrtInput(torch.nn.Module):
    """``model(sqrt(x))``: infinite input gradients at every pixel that is exactly 0."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x.sqrt())
        return out


def test_non_finite_gradients_never_poison_iterates(data: Digits) -> None:
    model = _SqrtInput(data.model)
    x, y = data.x[:40], data.y[:40]
    result = get_attack("fmn", steps=30)(model, x, y, epsilons=GRID[Norm.LINF])
    assert result.verify_failed is not None and not bool(result.verify_failed.any())
    assert result.min_norm is not None
    assert result.success[-1].float().mean() > 0.5  # still breaks most digits
