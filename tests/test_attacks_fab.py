"""Native FAB / FAB-T (attacks/fab.py): projection, invariants, and agreement with pyautoattack."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch

from attacks import AttackConfigError, Norm, get_attack, perturbation_norm
from attacks.fab import FABParams, FABTParams, _hyperplane_box_step, fab_targeted
from tests.attack_helpers import Digits, digits

NAMES = ["fab-t", "fab-t-l2", "fab", "fab-l2"]
GRID = {Norm.LINF: [0.0, 0.05, 0.1, 0.15, 0.3], Norm.L2: [0.0, 0.5, 1.0, 1.5, 3.0]}


@pytest.fixture(scope="module")
def data() -> Digits:
    return digits()


def _correct(data: Digits, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data.x[:n], data.y[:n]
    with torch.no_grad():
        ok = data.model(x).argmax(1) == y
    return x[ok], y[ok]


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2])
def test_hyperplane_step_is_feasible_and_minimal(norm: Norm) -> None:
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(64, 30, generator=gen, dtype=torch.float64)
    w = torch.randn(64, 30, generator=gen, dtype=torch.float64)
    w[:, :4] = 0  # coordinates the hyperplane does not depend on must not move
    c = torch.randn(64, generator=gen, dtype=torch.float64)
    c[32:] *= 20  # beyond what the box allows for most of these rows
    d = _hyperplane_box_step(t, w, c, norm)
    up = (w > 0) == (c > 0)[:, None]  # coordinates that move towards c by increasing
    reach = torch.where(up, 1 - t, t) * w.abs()  # most each can change <w, d> towards c
    feasible = reach.sum(dim=1) >= c.abs()
    assert bool(feasible.any()) and not bool(feasible.all())  # both cases are exercised
    assert bool(((t + d) >= -1e-12).all() and ((t + d) <= 1 + 1e-12).all())
    assert bool((d[:, :4] == 0).all())
    got = (w * d).sum(dim=1)
    assert torch.allclose(got[feasible], c[feasible], atol=1e-9)
    # Infeasible rows: the box corner that moves <w, .> furthest towards c.
    assert torch.allclose(got[~feasible].abs(), reach.sum(dim=1)[~feasible], atol=1e-9)
    # Minimal: no random feasible step (rescaled onto the hyperplane) is shorter.
    size = perturbation_norm(d, norm)
    for _ in range(20):
        r = (torch.rand(64, 30, generator=gen, dtype=torch.float64) - t) * (w != 0)  # in the box
        scale = c / (w * r).sum(dim=1)
        ok = feasible & (scale > 0) & (scale <= 1)  # r·scale stays in the box (convexity)
        other = perturbation_norm(r * scale[:, None], norm)
        assert bool((size[ok] <= other[ok] + 1e-9).all())


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2])
def test_hyperplane_step_matches_pyautoattack(norm: Norm) -> None:
    proj = pytest.importorskip("pyautoattack.fab_projections")
    ref_fn = proj.projection_linf if norm is Norm.LINF else proj.projection_l2
    gen = torch.Generator().manual_seed(1)
    t = torch.rand(50, 64, generator=gen)
    w = torch.randn(50, 64, generator=gen)
    w[:, :5] = 0
    b = (w * torch.rand(50, 64, generator=gen)).sum(1) + torch.randn(50, generator=gen) * 0.5
    ref = ref_fn(t.clone(), w.clone(), b.clone())
    ours = _hyperplane_box_step(t, w, b - (w * t).sum(1), norm)
    assert torch.allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_invariants(data: Digits, name: str) -> None:
    targets: dict[str, Any] = {"n_target_classes": 3} if name.startswith("fab-t") else {}
    attack = get_attack(name, n_iter=10, **targets)
    eps = GRID[attack.norm]
    x, y = data.x[:60], data.y[:60]
    result = attack(data.model, x, y, epsilons=eps)
    clean = (data.model(x).argmax(1) == y).float().mean().item()
    assert result.robust_accuracy()[0] == pytest.approx(clean)  # eps = 0: clean accuracy
    acc = result.robust_accuracy()
    assert all(b <= a for a, b in itertools.pairwise(acc))  # monotone in eps
    assert acc[-1] < 0.2  # a large budget breaks almost everything
    for k, e in enumerate(eps):
        adv = result.adversarials[k]
        assert bool(((adv >= 0) & (adv <= 1)).all())
        assert bool((perturbation_norm(adv - x, attack.norm) <= e * (1 + 1e-6) + 1e-6).all())
    assert result.min_norm is not None
    broken = result.success[-1]
    assert bool(torch.isfinite(result.min_norm[broken]).all())
    assert result.grad_evals > 0


def test_restarts_are_seeded_and_leave_global_rng_alone(data: Digits) -> None:
    x, y = data.x[:40], data.y[:40]
    before = torch.random.get_rng_state()
    runs = [
        get_attack("fab-t", n_iter=5, n_target_classes=2, restarts=r, seed=3)(
            data.model, x, y, epsilons=[0.1]
        )
        for r in (2, 2, 1)
    ]
    assert torch.equal(torch.random.get_rng_state(), before)
    norms = [r.min_norm for r in runs]
    assert norms[0] is not None and norms[1] is not None and norms[2] is not None
    assert torch.equal(norms[0], norms[1])  # same seed, same result
    assert bool((norms[0] <= norms[2]).all())  # a restart only ever keeps a smaller adversarial


def test_stop_below_is_the_budgeted_attack(data: Digits) -> None:
    x, y = _correct(data, 80)
    params = FABTParams(n_iter=15, n_target_classes=4)
    full = fab_targeted(data.model, x, y, norm=Norm.LINF, params=params)
    budget = torch.full((x.shape[0],), 0.1)
    cut = fab_targeted(data.model, x, y, norm=Norm.LINF, params=params, stop_below=budget)
    assert torch.equal(full.norms <= 0.1, cut.norms <= 0.1)  # same robust accuracy at the budget
    assert cut.grad_evals < full.grad_evals  # broken examples skip the later targets
    assert bool((cut.norms >= full.norms).all())  # fewer targets: never a smaller norm


def test_bad_parameters() -> None:
    with pytest.raises(AttackConfigError, match="n_target_classes"):
        FABTParams(n_target_classes=0)
    with pytest.raises(AttackConfigError, match="alpha_max"):
        FABParams(alpha_max=2.0)
    with pytest.raises(AttackConfigError, match="unknown parameter"):
        get_attack("fab", n_target_classes=3)  # untargeted FAB has no targets


@pytest.mark.parametrize(
    ("name", "norm", "eps"),
    [("fab-t", "Linf", [0.05, 0.1, 0.15]), ("fab-t-l2", "L2", [0.5, 1.0])],
)
def test_fab_t_agrees_with_pyautoattack(
    data: Digits, name: str, norm: str, eps: list[float]
) -> None:
    """Robust accuracy of native FAB-T (one minimum-norm run) vs pyautoattack's FAB-T per eps.

    Both run 9 targets × 30 iterations without random starts, so they are the same computation:
    measured identical at every eps (100 digits; also at 100 iterations, see docs/attacks.md).
    """
    fab_pt = pytest.importorskip("pyautoattack.fab_pt")
    x, y = data.x[:100], data.y[:100]
    native = get_attack(name, n_iter=30)(data.model, x, y, epsilons=eps).robust_accuracy()
    for k, e in enumerate(eps):
        ref = fab_pt.FABAttack_PT(
            data.model, norm=norm, n_restarts=1, n_iter=30, eps=e, targeted=True, seed=0
        )
        ref.n_target_classes = 9
        with torch.no_grad():
            adv = ref.perturb(x, y)
            p = math.inf if norm == "Linf" else 2
            within = (adv - x).flatten(1).norm(p=p, dim=1) <= e + 1e-6
            broken = within & (data.model(adv).argmax(1) != y)
        assert abs(native[k] - (1 - broken.float().mean().item())) <= 0.01, (e, native)


class _SqrtInput(torch.nn.Module):
    """``model(sqrt(x))``: infinite input gradients at every pixel that is exactly 0."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x.sqrt())
        return out


@pytest.mark.parametrize("name", ["fab-t", "fab-l2"])
def test_non_finite_gradients_never_poison_iterates(data: Digits, name: str) -> None:
    model = _SqrtInput(data.model)
    x, y = data.x[:40], data.y[:40]
    targets: dict[str, Any] = {"n_target_classes": 2} if name == "fab-t" else {}
    attack = get_attack(name, n_iter=10, **targets)
    result = attack(model, x, y, epsilons=GRID[attack.norm])
    assert result.verify_failed is not None and not bool(result.verify_failed.any())
    assert bool(torch.isfinite(result.adversarials).all())
    assert result.success[-1].float().mean() > 0.5  # still breaks most digits
