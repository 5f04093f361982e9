"""Native APGD-CE / APGD-DLR / APGD-T: invariants, losses, work accounting, seeds."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from torch import nn

from attacks import AttackConfigError, AttackInputError, Norm, get_attack, verify_adversarials
from attacks.apgd import dlr_loss, dlr_targeted_loss
from tests.attack_helpers import Digits, digits

LINF_EPS = [0.0, 0.05, 0.1, 0.2]
L2_EPS = [0.0, 0.5, 1.0, 2.0]
NAMES = ["apgd-ce", "apgd-dlr", "apgd-t", "apgd-ce-l2", "apgd-dlr-l2", "apgd-t-l2"]


@pytest.fixture(scope="module")
def data() -> Digits:
    return digits()


def _eps(name: str) -> list[float]:
    return L2_EPS if name.endswith("-l2") else LINF_EPS


@pytest.mark.parametrize("name", NAMES)
def test_invariants(data: Digits, name: str) -> None:
    x, y = data.x[:48], data.y[:48]
    attack = get_attack(name, steps=10, n_target_classes=3) if "-t" in name else None
    attack = attack or get_attack(name, steps=10)
    eps = _eps(name)
    result = attack(data.model, x, y, epsilons=eps)
    assert torch.equal(result.adversarials[0], x)  # eps = 0 -> x
    clean = data.model(x).argmax(1) == y
    assert result.robust_accuracy()[0] == pytest.approx(float(clean.float().mean()))
    for k, e in enumerate(eps):
        assert bool(verify_adversarials(result.adversarials[k], x, e, attack.norm).all())
    acc = result.robust_accuracy()
    assert all(b <= a for a, b in pairwise(acc))  # nested: monotone
    assert acc[-1] < acc[1]  # the attack does break examples
    # Broken at eps_j => broken at every larger eps (nested balls).
    s = result.success
    assert bool((s[:-1] <= s[1:]).all())


def test_work_bound_and_early_stop(data: Digits) -> None:
    x, y = data.x[:64], data.y[:64]
    n_correct = int((data.model(x).argmax(1) == y).sum())
    steps = 20
    result = get_attack("apgd-ce", steps=steps)(data.model, x, y, epsilons=[0.1])
    assert 0 < result.grad_evals <= (steps + 1) * n_correct
    assert result.grad_evals < (steps + 1) * n_correct  # early stop saved work
    assert result.details is not None and result.details["forward_evals"] >= result.grad_evals
    # Sequential restarts run only on the examples still robust.
    seq = get_attack("apgd-ce", steps=steps, restarts=2, parallel=False)
    two = seq(data.model, x, y, epsilons=[0.1])
    survivors = int((~result.success[0]).sum())
    assert two.grad_evals <= result.grad_evals + (steps + 1) * survivors
    # Parallel restarts: both runs as rows of one batch, an example stops at its first break.
    par = get_attack("apgd-ce", steps=steps, restarts=2)(data.model, x, y, epsilons=[0.1])
    assert par.grad_evals <= 2 * (steps + 1) * n_correct
    assert par.robust_accuracy()[0] <= result.robust_accuracy()[0]


def test_nested_grid_attacks_only_survivors(data: Digits) -> None:
    x, y = data.x[:64], data.y[:64]
    eps = [0.05, 0.1, 0.15]
    nested = get_attack("apgd-ce", steps=10)(data.model, x, y, epsilons=eps)
    plain = get_attack("apgd-ce", steps=10, nested=False)(data.model, x, y, epsilons=eps)
    assert nested.grad_evals < plain.grad_evals
    # Nested adds the union over smaller balls; per-eps runs differ only by randomness.
    for a, b in zip(nested.robust_accuracy(), plain.robust_accuracy(), strict=True):
        assert a <= b + 3 / 64


def test_seed_reproducible_and_global_rng_untouched(data: Digits) -> None:
    x, y = data.x[:32], data.y[:32]
    attack = get_attack("apgd-t", steps=5, n_target_classes=2, seed=3)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = attack(data.model, x, y, epsilons=[0.05, 0.1])
    assert torch.equal(torch.get_rng_state(), state)
    b = attack(data.model, x, y, epsilons=[0.05, 0.1])
    assert torch.equal(a.adversarials, b.adversarials)
    c = get_attack("apgd-t", steps=5, n_target_classes=2, seed=4)(
        data.model, x, y, epsilons=[0.05, 0.1]
    )
    assert not torch.equal(a.adversarials, c.adversarials)


def test_dlr_losses_by_definition() -> None:
    logits = torch.tensor([[4.0, 1.0, 0.0, -1.0], [0.0, 3.0, 2.0, 1.0]])
    y = torch.tensor([0, 2])
    # Row 0: correct, margin 4 - 1 over (4 - 0); row 1: wrong, (2 - 3) / (3 - 1).
    assert torch.allclose(dlr_loss(logits, y), torch.tensor([-0.75, 0.5]))
    target = torch.tensor([1, 1])
    # Row 0: -(4 - 1) / (4 - (0 + -1)/2); row 1: -(2 - 3) / (3 - (1 + 0)/2).
    expected = torch.tensor([-3.0 / 4.5, 1.0 / 2.5])
    assert torch.allclose(dlr_targeted_loss(logits, y, target), expected)


def test_dlr_needs_enough_classes() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.rand(4, 1, 2, 2)
    y = model(x).argmax(1)
    with pytest.raises(AttackInputError, match="at least 4 classes"):
        get_attack("apgd-t", steps=2)(model, x, y, epsilons=[0.1])
    get_attack("apgd-dlr", steps=2)(model, x, y, epsilons=[0.1])  # 3 classes suffice


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"steps": 0}, "steps"),
        ({"restarts": 0}, "restarts"),
        ({"rho": 1.5}, "rho"),
        ({"seed": 1.5}, "seed"),
        ({"nested": 1}, "nested"),
        ({"parallel": "yes"}, "parallel"),
    ],
)
def test_bad_parameters(params: dict[str, object], message: str) -> None:
    with pytest.raises(AttackConfigError, match=message):
        get_attack("apgd-ce", **params)
    with pytest.raises(AttackConfigError, match="n_target_classes"):
        get_attack("apgd-t", n_target_classes=0)


def test_l2_is_l2(data: Digits) -> None:
    x, y = data.x[:32], data.y[:32]
    result = get_attack("apgd-ce-l2", steps=10)(data.model, x, y, epsilons=[1.0])
    assert get_attack("apgd-ce-l2").norm is Norm.L2
    assert float(result.norms.max()) <= 1.0 + 1e-5
