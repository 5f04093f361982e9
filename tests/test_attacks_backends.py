"""Backends agree: native vs torchattacks vs foolbox on the same model and inputs."""

from __future__ import annotations

import pytest
import torch

from attacks import get_attack, list_attacks, list_backends
from tests.attack_helpers import Digits, digits

# The backends that implement the classic attacks compared here (fgsm, pgd, pgd-l2).
BACKENDS = [b for b in list_backends() if {"fgsm", "pgd", "pgd-l2"} <= set(list_attacks(b))]


@pytest.fixture(scope="module")
def data() -> Digits:
    return digits()


def test_fgsm_identical_across_backends(data: Digits) -> None:
    eps = [0.0, 0.05, 0.1, 0.2]
    results = {
        b: get_attack("fgsm", backend=b)(data.model, data.x, data.y, epsilons=eps) for b in BACKENDS
    }
    ref = results["native"]
    for b in BACKENDS[1:]:
        assert torch.allclose(results[b].adversarials, ref.adversarials, atol=1e-6), b
        assert torch.equal(results[b].success, ref.success), b
    n_attacked = ref.grad_evals
    assert results["torchattacks"].grad_evals == 3 * n_attacked  # one object per positive eps
    assert results["foolbox"].grad_evals == 3 * n_attacked


@pytest.mark.parametrize(
    ("name", "eps", "step"), [("pgd", [0.05, 0.1], 0.02), ("pgd-l2", [0.5, 1.0], 0.2)]
)
def test_pgd_robust_accuracy_agrees_across_backends(
    data: Digits, name: str, eps: list[float], step: float
) -> None:
    x, y = data.x[:200], data.y[:200]
    accs = {
        b: get_attack(name, backend=b, steps=10, abs_stepsize=step, random_start=False)(
            data.model, x, y, epsilons=eps
        ).robust_accuracy()
        for b in BACKENDS
    }
    for b in BACKENDS[1:]:
        for a, r in zip(accs[b], accs["native"], strict=True):
            assert abs(a - r) <= 0.005, (b, accs)


def test_cw_success_agrees_with_foolbox(data: Digits) -> None:
    x, y = data.x[:100], data.y[:100]
    eps = [0.5, 1.0, 1.5]
    params = {"binary_search_steps": 4, "steps": 60}
    native = get_attack("cw", **params)(data.model, x, y, epsilons=eps)
    foolbox = get_attack("cw", backend="foolbox", **params)(data.model, x, y, epsilons=eps)
    for a, b in zip(native.robust_accuracy(), foolbox.robust_accuracy(), strict=True):
        assert abs(a - b) <= 0.05
    assert native.min_norm is not None and bool(torch.isfinite(native.min_norm).all())


def test_torchattacks_cw_fixed_c_is_valid(data: Digits) -> None:
    x, y = data.x[:60], data.y[:60]
    result = get_attack("cw-fixed-c", backend="torchattacks", steps=30)(
        data.model, x, y, epsilons=[0.0, 1.0, 3.0]
    )
    assert result.min_norm is not None
    assert bool((result.norms[1] <= 1.0 + 1e-5).all())
    assert result.success[2].float().mean() > 0  # it does break some digits
