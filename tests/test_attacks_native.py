"""Native FGSM / PGD / C&W: correctness against the definitions and strength on digits."""

from __future__ import annotations

import pytest
import torch

from attacks import Norm, clip_to_ball, get_attack
from attacks.gradients import loss_gradient
from tests.attack_helpers import Digits, digits


@pytest.fixture(scope="module")
def data() -> Digits:
    return digits()


def test_model_is_accurate(data: Digits) -> None:
    assert data.clean_accuracy > 0.9


def test_fgsm_one_gradient_serves_every_eps(data: Digits) -> None:
    x, y = data.x[:64], data.y[:64]
    eps = [0.0, 0.05, 0.1, 0.3]
    result = get_attack("fgsm")(data.model, x, y, epsilons=eps)
    correct = data.model(x).argmax(1) == y
    assert result.grad_evals == int(correct.sum())
    direction = loss_gradient(data.model, x, y).sign()
    for k, e in enumerate(eps):
        # The FGSM point where it broke the example (clean-correct), x everywhere else.
        broken = correct & result.success[k]
        expected = torch.where(
            broken[:, None, None, None], clip_to_ball(x + e * direction, x, e, Norm.LINF), x
        )
        assert torch.equal(result.adversarials[k], expected)
        assert bool((result.success[k] & correct).any()) or e == 0


@pytest.mark.parametrize("name", ["pgd", "pgd-l2"])
def test_pgd_grid_batch_equals_one_run_per_eps(data: Digits, name: str) -> None:
    x, y = data.x[:32], data.y[:32]
    # Plain PGD (engine off): one stacked batch must equal one run per epsilon.
    attack = get_attack(name, steps=5, random_start=False, nested=False, early_stop=False)
    eps = [0.05, 0.1] if name == "pgd" else [0.5, 1.0]
    together = attack(data.model, x, y, epsilons=eps)
    for k, e in enumerate(eps):
        alone = attack(data.model, x, y, epsilons=[e])
        assert torch.allclose(together.adversarials[k], alone.adversarials[0], atol=1e-6)
        assert torch.equal(together.success[k], alone.success[0])
    n_correct = int((data.model(x).argmax(1) == y).sum())
    assert together.grad_evals == 5 * len(eps) * n_correct  # steps × K × attacked examples


def test_pgd_not_weaker_than_fgsm(data: Digits) -> None:
    x, y = data.x[:200], data.y[:200]
    eps = [0.05, 0.1, 0.2]
    fgsm = get_attack("fgsm")(data.model, x, y, epsilons=eps).robust_accuracy()
    pgd = get_attack("pgd")(data.model, x, y, epsilons=eps).robust_accuracy()
    for f, p in zip(fgsm, pgd, strict=True):
        assert p <= f + 0.01
    assert pgd[-1] < 0.2  # eps 0.2 on 8x8 digits breaks almost everything


def test_pgd_restarts_never_hurt(data: Digits) -> None:
    x, y = data.x[:100], data.y[:100]
    one = get_attack("pgd", steps=5, seed=1)(data.model, x, y, epsilons=[0.1])
    three = get_attack("pgd", steps=5, restarts=3, seed=1)(data.model, x, y, epsilons=[0.1])
    # restart 1 is the same seeded run; later restarts only replace unbroken examples
    assert bool((three.success | ~one.success).all())
    assert three.grad_evals >= one.grad_evals


def test_pgd_l2_breaks_digits_at_large_eps(data: Digits) -> None:
    result = get_attack("pgd-l2")(data.model, data.x[:100], data.y[:100], epsilons=[0.25, 2.0])
    acc = result.robust_accuracy()
    assert acc[1] < 0.05 and acc[0] > acc[1]


def test_cw_finds_finite_minimal_norms(data: Digits) -> None:
    x, y = data.x[:60], data.y[:60]
    eps = [0.0, 0.5, 1.0, 2.0]
    result = get_attack("cw")(data.model, x, y, epsilons=eps)  # defaults
    assert result.min_norm is not None
    assert bool(torch.isfinite(result.min_norm).all())  # every digit is misclassifiable
    correct = data.model(x).argmax(1) == y
    assert bool((result.min_norm[correct] > 0).all())
    # thresholds are read off one run: success is monotone in eps
    assert bool((result.success[1:] >= result.success[:-1]).all())
    # at its min norm, the adversarial is misclassified (checked via the largest threshold)
    assert bool(result.success[-1][result.min_norm <= 2.0].all())
    # near-minimal: PGD-L2 at the same budget is not much stronger than C&W
    pgd = get_attack("pgd-l2")(data.model, x, y, epsilons=eps[1:]).robust_accuracy()
    for c, p in zip(result.robust_accuracy()[1:], pgd, strict=True):
        assert c <= p + 0.05
