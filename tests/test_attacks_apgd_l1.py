"""attacks.apgd_l1: l1-APGD (CE and targeted DLR) and the L1 AutoAttack cascade."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from attacks import AttackConfigError, get_attack
from attacks.apgd_l1 import larger_eps_schedule
from attacks.norms import Norm, perturbation_norm
from tests.attack_helpers import digits


def test_larger_eps_schedule_splits_the_steps_like_the_reference() -> None:
    assert larger_eps_schedule(100, True) == [(3.0, 30), (2.0, 30), (1.0, 40)]
    assert larger_eps_schedule(10, True) == [(3.0, 3), (2.0, 3), (1.0, 4)]
    assert larger_eps_schedule(100, False) == [(1.0, 100)]
    assert larger_eps_schedule(2, True) == [(1.0, 2)]  # no room for three stages
    for steps in range(3, 40):
        assert sum(it for _, it in larger_eps_schedule(steps, True)) == steps


def test_defaults_are_autoattack_l1_standard() -> None:
    ce, t = get_attack("apgd-ce-l1"), get_attack("apgd-t-l1")
    assert (ce.norm, ce.steps, ce.restarts, ce.larger_eps) == (Norm.L1, 100, 5, True)  # type: ignore[attr-defined]
    assert (t.restarts, t.n_target_classes, t.larger_eps) == (1, 5, True)  # type: ignore[attr-defined]
    with pytest.raises(AttackConfigError, match="larger_eps must be a bool"):
        get_attack("apgd-ce-l1", larger_eps=1)
    with pytest.raises(AttackConfigError, match="unknown parameter"):
        get_attack("apgd-ce-l1", rho=0.5)  # the L1 schedule has no rho


@pytest.mark.parametrize("name", ["apgd-ce-l1", "apgd-t-l1"])
@pytest.mark.parametrize("larger_eps", [False, True])
def test_adversarials_inside_the_l1_ball_and_box_and_curve_monotone(
    name: str, larger_eps: bool
) -> None:
    d = digits()
    x, y = d.x[:40], d.y[:40]
    eps = [0.0, 0.5, 1.5, 3.0]
    r = get_attack(name, steps=12, larger_eps=larger_eps)(d.model, x, y, epsilons=eps)
    clean = d.model(x).argmax(1) == y
    assert torch.equal(~r.success[0], clean)  # eps = 0 is the clean accuracy
    robust = (~r.success).sum(dim=1).tolist()
    assert robust == sorted(robust, reverse=True) and robust[-1] < robust[0]
    for k, e in enumerate(eps):
        ok = r.success[k]
        adv = r.adversarials[k][ok]
        assert (perturbation_norm(adv - x[ok], Norm.L1) <= e * (1 + 1e-6) + 1e-5).all()
        assert ((adv >= 0) & (adv <= 1)).all()
        assert (d.model(adv).argmax(1) != y[ok]).all()


def test_parallel_and_sequential_runs_are_both_valid_and_close() -> None:
    d = digits()
    x, y = d.x[:60], d.y[:60]
    kw: dict[str, Any] = {"steps": 20, "restarts": 2, "larger_eps": False}
    par = get_attack("apgd-ce-l1", parallel=True, **kw)(d.model, x, y, epsilons=[1.5])
    seq = get_attack("apgd-ce-l1", parallel=False, **kw)(d.model, x, y, epsilons=[1.5])
    # The same runs in another order: never more than a couple of examples apart.
    assert abs(int(par.success.sum()) - int(seq.success.sum())) <= 3


def test_work_is_counted_within_the_budget() -> None:
    d = digits()
    x, y = d.x[:30], d.y[:30]
    attack = get_attack("apgd-t-l1", steps=10, n_target_classes=3)
    r = attack(d.model, x, y, epsilons=[1.0])
    budget = attack.grad_budget_per_example(10) * 30  # type: ignore[attr-defined]
    assert 0 < r.grad_evals <= budget
    assert budget == (10 + 3) * 1 * 3 * 30  # steps + one start per stage, x targets


def test_autoattack_l1_cascade_runs_its_two_l1_stages() -> None:
    d = digits()
    x, y = d.x[:30], d.y[:30]
    cascade = get_attack("autoattack-l1")
    assert [s.name for s in cascade.stages()] == ["apgd-ce-l1", "apgd-t-l1"]  # type: ignore[attr-defined]
    r = cascade(d.model, x, y, epsilons=[0.0, 1.0])
    alone = get_attack("apgd-ce-l1")(d.model, x, y, epsilons=[0.0, 1.0])
    assert (r.success.sum(1) >= alone.success.sum(1)).all()  # the cascade adds APGD-T
    assert r.details is not None and r.details["stages"] == ["apgd-ce-l1", "apgd-t-l1"]


@pytest.mark.parametrize(
    ("name", "ref_cls", "kwargs"),
    [
        ("apgd-ce-l1", "APGDAttack", {"loss": "ce"}),
        ("apgd-t-l1", "APGDAttack_targeted", {"n_target_classes": 3}),
    ],
)
def test_agrees_with_pyautoattack_at_equal_iterations(
    name: str, ref_cls: str, kwargs: dict[str, Any]
) -> None:
    ref = pytest.importorskip("pyautoattack.autopgd_base")
    d = digits()
    x, y = d.x[:100], d.y[:100]
    model = d.model
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for eps in (1.0, 2.0):
            for larger in (False, True):
                ours_kw = {k: v for k, v in kwargs.items() if k != "loss"}
                ours = get_attack(name, steps=20, restarts=1, larger_eps=larger, **ours_kw)
                native = int((~ours(model, x, y, epsilons=[eps]).success[0]).sum())
                attack = getattr(ref, ref_cls)(
                    model,
                    n_iter=20,
                    norm="L1",
                    n_restarts=1,
                    eps=eps,
                    seed=0,
                    use_largereps=larger,
                    **kwargs,
                )
                adv = attack.perturb(x.clone(), y.clone())
                theirs = int((model(adv).argmax(1) == y).sum())
                # Different random starts: a few examples either way, on 100.
                assert abs(native - theirs) <= 4, (eps, larger, native, theirs)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)


@pytest.mark.parametrize("classes", [2, 3])
def test_autoattack_l1_on_few_classes_runs_apgd_t_on_the_targeted_ce(classes: int) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, classes)).eval()
    x = torch.rand(20, 1, 8, 8)
    y = model(x).argmax(1)
    with pytest.raises(Exception, match="needs a model with at least 4 classes"):
        get_attack("apgd-t-l1", steps=5)(model, x, y, epsilons=[1.0])
    r = get_attack("autoattack-l1")(model, x, y, epsilons=[0.0, 0.5, 2.0])
    assert r.details is not None and r.details["stages"] == ["apgd-ce-l1", "apgd-t-ce-l1"]
    assert [s["ran"] for s in r.details["substitutions"]] == ["apgd-t-ce-l1"]
    robust = (~r.success).sum(1).tolist()
    assert robust[0] == 20 and robust[-1] < robust[0]
    for k, e in enumerate([0.0, 0.5, 2.0]):
        adv = r.adversarials[k][r.success[k]]
        assert (perturbation_norm(adv - x[r.success[k]], Norm.L1) <= e + 1e-5).all()
