"""attacks.engine / native PGD grid engine: nested balls, early stop, honest work accounting."""

from __future__ import annotations

import pytest
import torch

from attacks import AttackConfigError, Norm, get_attack, verify_adversarials
from attacks.backends.counting import GradCounter
from attacks.engine import pgd_early_stop, random_start
from tests.attack_helpers import Digits, digits

EPS = {"pgd": [0.03, 0.06, 0.1, 0.2], "pgd-l2": [0.25, 0.5, 1.0, 2.0]}


@pytest.fixture(scope="module")
def data() -> Digits:
    return digits()


def _per_eps_union(data: Digits, name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Naive evaluation: plain PGD alone at every eps, then "broken at some eps_j <= eps_k"."""
    plain = get_attack(name, steps=5, random_start=False, nested=False, early_stop=False)
    rows = [plain(data.model, x, y, epsilons=[e]).success[0] for e in EPS[name]]
    return torch.stack(rows).cummax(dim=0).values  # (K, N)


@pytest.mark.parametrize("name", ["pgd", "pgd-l2"])
def test_nested_equals_naive_union(data: Digits, name: str) -> None:
    x, y = data.x[:64], data.y[:64]
    union = _per_eps_union(data, name, x, y)
    nested = get_attack(name, steps=5, random_start=False, early_stop=False, warm_start=False)(
        data.model, x, y, epsilons=EPS[name]
    )
    assert torch.equal(nested.success, union)
    assert int(union[-1].sum()) > 0 and int(union[0].sum()) < int(union[-1].sum())


@pytest.mark.parametrize("name", ["pgd", "pgd-l2"])
def test_early_stop_never_loses_an_example(data: Digits, name: str) -> None:
    # Same deterministic trajectory; stopping at the first misclassified iterate can only add.
    x, y = data.x[:64], data.y[:64]
    union = _per_eps_union(data, name, x, y)
    engine = get_attack(name, steps=5, random_start=False, warm_start=False)(
        data.model, x, y, epsilons=EPS[name]
    )
    assert bool((engine.success | ~union).all())


def test_default_engine_is_monotone_verified_and_copies_forward(data: Digits) -> None:
    x, y = data.x[:80], data.y[:80]
    eps = [0.0, *EPS["pgd"]]
    result = get_attack("pgd", steps=5)(data.model, x, y, epsilons=eps)
    assert bool((result.success[1:] >= result.success[:-1]).all())  # monotone by construction
    for k, e in enumerate(eps):
        assert bool(verify_adversarials(result.adversarials[k], x, e, Norm.LINF).all())
    with torch.no_grad():
        correct = data.model(x).argmax(1) == y
    first = result.success.float().argmax(dim=0)  # (N,) first eps index where broken
    for i in (correct & result.success[-1]).nonzero().squeeze(1).tolist():
        j = int(first[i])
        for k in range(j + 1, len(eps)):  # the adversarial found at eps_j is reused, unchanged
            assert torch.equal(result.adversarials[k, i], result.adversarials[j, i])


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2])
def test_early_stopped_examples_are_verified_adversarials(data: Digits, norm: Norm) -> None:
    x, y = data.x[:100], data.y[:100]
    e = 0.15 if norm is Norm.LINF else 1.0
    eps = torch.full((x.shape[0],), e)
    step = eps * 0.125
    run = pgd_early_stop(
        data.model, x, y, eps, step, norm=norm, steps=8, start=random_start(x, eps, norm)
    )
    assert 0 < int(run.broken.sum()) < x.shape[0] or bool(run.broken.all())
    assert bool(verify_adversarials(run.adversarials, x, e, norm).all())
    with torch.no_grad():
        pred = data.model(run.adversarials).argmax(1)
    assert torch.equal(run.broken, pred != y)
    assert run.grad_evals < 8 * x.shape[0]  # the batch shrank


def test_grad_evals_counts_exactly_the_gradients_computed(data: Digits) -> None:
    x, y = data.x[:64], data.y[:64]
    counter = GradCounter(data.model)
    for attack in (
        get_attack("pgd", steps=5),
        get_attack("pgd-l2", steps=5),
        get_attack("pgd", steps=5, restarts=2),
        get_attack("pgd", steps=5, nested=False, early_stop=False),
    ):
        before = counter.count
        result = attack(counter, x, y, epsilons=[0.0, *EPS[attack.name]])
        assert result.grad_evals == counter.count - before, attack


def test_engine_does_less_work_than_naive(data: Digits) -> None:
    x, y = data.x[:64], data.y[:64]
    n_correct = int((data.model(x).argmax(1) == y).sum())
    naive = 5 * len(EPS["pgd"]) * n_correct
    plain = get_attack("pgd", steps=5, nested=False, early_stop=False)
    engine = get_attack("pgd", steps=5)
    assert plain(data.model, x, y, epsilons=EPS["pgd"]).grad_evals == naive
    assert engine(data.model, x, y, epsilons=EPS["pgd"]).grad_evals < naive


@pytest.mark.parametrize("name", ["pgd", "pgd-l2"])
def test_plain_mode_grid_batch_equals_one_run_per_eps(data: Digits, name: str) -> None:
    x, y = data.x[:32], data.y[:32]
    attack = get_attack(name, steps=5, random_start=False, nested=False, early_stop=False)
    eps = EPS[name][:2]
    together = attack(data.model, x, y, epsilons=eps)
    for k, e in enumerate(eps):
        alone = attack(data.model, x, y, epsilons=[e])
        assert torch.allclose(together.adversarials[k], alone.adversarials[0], atol=1e-6)
        assert torch.equal(together.success[k], alone.success[0])


def test_engine_not_weaker_than_plain_pgd(data: Digits) -> None:
    x, y = data.x[:100], data.y[:100]
    eps = EPS["pgd"]
    plain = get_attack("pgd", steps=5, nested=False, early_stop=False)
    engine = get_attack("pgd", steps=5)
    p_acc = plain(data.model, x, y, epsilons=eps).robust_accuracy()
    e_acc = engine(data.model, x, y, epsilons=eps).robust_accuracy()
    for p, e in zip(p_acc, e_acc, strict=True):
        assert e <= p + 0.005


def test_engine_switches_are_native_only_and_validated() -> None:
    for backend in ("torchattacks", "foolbox"):
        for flag in ("nested", "early_stop", "warm_start"):
            with pytest.raises(AttackConfigError, match="unknown parameter"):
                get_attack("pgd", backend=backend, **{flag: True})
    with pytest.raises(AttackConfigError, match="nested must be a bool"):
        get_attack("pgd", nested="yes")
    params = get_attack("pgd").params()
    assert params["nested"] and params["early_stop"] and params["warm_start"]
    shared = get_attack("pgd", backend="torchattacks").params()
    assert {k: v for k, v in params.items() if k in shared} == shared
