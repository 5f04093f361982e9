"""attacks.base / attacks.guard: the template's validation, freezing and verification rules."""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from attacks import (
    Attack,
    AttackInputError,
    AttackKind,
    FixedBudgetOutput,
    MinimumNormOutput,
    Norm,
    frozen_eval,
    get_attack,
    list_attacks,
    verify_adversarials,
)
from attacks.registry import attack_class
from tests.attack_helpers import Digits, digits, fresh_bn_model, installed_backends

# Small budgets: these tests check invariants, not strength.
FAST: dict[str, dict[str, Any]] = {
    "pgd": {"steps": 3},
    "pgd-l2": {"steps": 3},
    "cw": {"binary_search_steps": 2, "steps": 10},
    "cw-fixed-c": {"steps": 10},
    "fab": {"n_iter": 5},
    "fab-l2": {"n_iter": 5},
    "fab-t": {"n_iter": 5, "n_target_classes": 2},
    "fab-t-l2": {"n_iter": 5, "n_target_classes": 2},
    "fmn": {"steps": 10},
    "fmn-l2": {"steps": 10},
    "square": {"n_queries": 50},
    "square-l2": {"n_queries": 50},
    "ddn": {"steps": 10},
}
ALL = [(b, n) for b in installed_backends() for n in list_attacks(b)]


def _eps(attack: Attack) -> list[float]:
    return [0.0, 0.05, 0.2] if attack.norm is Norm.LINF else [0.0, 0.5, 1.5]


@pytest.fixture(scope="module")
def data() -> Digits:
    return digits()


# -- input validation ------------------------------------------------------------------------


def test_inputs_outside_unit_interval_rejected_with_message() -> None:
    model = fresh_bn_model()
    x = torch.full((2, 1, 8, 8), 0.5)
    x[0, 0, 0, 0] = -0.2
    x[1, 0, 0, 0] = 1.3
    with pytest.raises(AttackInputError) as err:
        get_attack("fgsm")(model, x, torch.tensor([0, 1]), epsilons=[0.1])
    assert str(err.value) == (
        "inputs must lie in [0, 1] (got min -0.2, max 1.3); attacks work in pixel space – "
        "put normalization inside the model"
    )


@pytest.mark.parametrize(
    "epsilons", [[0.2, 0.1], [-0.1, 0.1], [float("nan")], [float("inf")], [], 0.1, "0.1"]
)
def test_bad_epsilons_rejected(epsilons: Any) -> None:
    with pytest.raises(AttackInputError):
        get_attack("fgsm")(
            fresh_bn_model(), torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), epsilons=epsilons
        )


def test_nonfinite_inputs_and_bad_labels_rejected() -> None:
    model = fresh_bn_model()
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(AttackInputError, match="finite"):
        get_attack("fgsm")(
            model, x.clone().fill_(float("nan")), torch.tensor([0, 1]), epsilons=[0.1]
        )
    with pytest.raises(AttackInputError, match="labels"):
        get_attack("fgsm")(model, x, torch.tensor([0, 1, 2]), epsilons=[0.1])
    with pytest.raises(AttackInputError, match="labels"):
        get_attack("fgsm")(model, x, torch.tensor([0.0, 1.0]), epsilons=[0.1])


# -- the model is left exactly as it was --------------------------------------------------------


@pytest.mark.parametrize(("backend", "name"), ALL)
def test_model_frozen_in_eval_during_attack_and_restored(backend: str, name: str) -> None:
    model = fresh_bn_model()  # train mode, params require grad
    bn_before = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[tuple[bool, bool]] = []

    def spy(module: nn.Module, inputs: Any) -> None:
        seen.append(
            (
                any(m.training for m in model.modules()),
                any(p.requires_grad for p in model.parameters()),
            )
        )

    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad(), frozen_eval(model):
        y = model(x).argmax(1)  # every example clean-correct, so every example is attacked
    handle = model.register_forward_pre_hook(spy)
    attack = get_attack(name, backend=backend, **FAST.get(name, {}))
    attack(model, x, y, epsilons=_eps(attack)[1:])
    handle.remove()

    assert seen and not any(training or grad for training, grad in seen)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    for key, value in bn_before.items():  # running_mean/var, num_batches_tracked, weights
        assert torch.equal(value, after[key]), key


def test_frozen_eval_restores_on_exception() -> None:
    model = fresh_bn_model()
    model[2].eval()  # a submodule with its own mode must keep it
    with pytest.raises(RuntimeError), frozen_eval(model):
        assert not model.training
        assert not any(p.requires_grad for p in model.parameters())
        raise RuntimeError("boom")
    assert model.training and not model[2].training
    assert all(p.requires_grad for p in model.parameters())


# -- counted results obey the rules, for every attack and backend --------------------------------


@pytest.mark.parametrize(("backend", "name"), ALL)
def test_results_obey_invariants(data: Digits, backend: str, name: str) -> None:
    x, y = data.x[:48], data.y[:48].clone()
    y[:3] = (y[:3] + 1) % 10  # three clean-misclassified examples
    attack = get_attack(name, backend=backend, **FAST.get(name, {}))
    eps = _eps(attack)
    result = attack(data.model, x, y, epsilons=eps)

    k, n = len(eps), len(y)
    assert result.epsilons == eps
    assert result.adversarials.shape == (k, n, 1, 8, 8)
    assert result.success.shape == result.norms.shape == (k, n)
    assert result.success.dtype == torch.bool
    # eps = 0: the adversarial is x itself and robust accuracy equals clean accuracy
    assert torch.equal(result.adversarials[0], x)
    with torch.no_grad():
        clean_correct = data.model(x).argmax(1) == y
    assert torch.equal(~result.success[0], clean_correct)
    # clean-misclassified: success at every eps with adversarial = x
    assert bool(result.success[:, :3].all())
    assert torch.equal(result.adversarials[:, :3], x[:3].expand(k, -1, -1, -1, -1))
    for i, e in enumerate(eps):
        assert bool(verify_adversarials(result.adversarials[i], x, e, attack.norm).all())
        assert bool((result.norms[i] <= e + 1e-5).all())
        with torch.no_grad():
            pred = data.model(result.adversarials[i]).argmax(1)
        assert torch.equal(result.success[i], pred != y)
    if attack.kind is AttackKind.MINIMUM_NORM:
        assert result.min_norm is not None
        assert torch.equal(result.min_norm[:3], torch.zeros(3))
        for i, e in enumerate(eps):
            assert torch.equal(result.success[i], result.min_norm <= e)
    else:
        assert result.min_norm is None
    if getattr(type(attack), "gradient_free", False):  # black box: forward passes only
        assert result.grad_evals == 0
        assert result.details is not None and result.details["forward_evals"] > 0
    else:
        assert result.grad_evals > 0


def test_attack_works_inside_no_grad(data: Digits) -> None:
    x, y = data.x[:16], data.y[:16]
    with torch.no_grad():
        result = get_attack("pgd", steps=2)(data.model, x, y, epsilons=[0.1])
        n_correct = int((data.model(x).argmax(1) == y).sum())
    assert result.grad_evals == 2 * n_correct


def test_random_start_is_seeded(data: Digits) -> None:
    a = get_attack("pgd", steps=2, seed=3)
    r1 = a(data.model, data.x[:16], data.y[:16], epsilons=[0.1])
    r2 = a(data.model, data.x[:16], data.y[:16], epsilons=[0.1])
    assert torch.equal(r1.adversarials, r2.adversarials)


# -- the template's verification and read-off, with fake attacks -----------------------------------


@dataclass(frozen=True, repr=False)
class _OutOfBall(Attack):
    """Returns x + 2·eps everywhere: outside the ball, must be rejected."""

    name: ClassVar[str] = "bad"
    norm: ClassVar[Norm] = Norm.LINF
    kind: ClassVar[AttackKind] = AttackKind.FIXED_BUDGET
    backend: ClassVar[str] = "test"

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> FixedBudgetOutput:
        return FixedBudgetOutput(
            torch.stack([(x + 2 * e).clamp(0, 1) for e in epsilons]), grad_evals=0
        )


@dataclass(frozen=True, repr=False)
class _FixedPoint(Attack):
    """Minimum-norm fake: returns a constant image for every example."""

    name: ClassVar[str] = "const"
    norm: ClassVar[Norm] = Norm.L2
    kind: ClassVar[AttackKind] = AttackKind.MINIMUM_NORM
    backend: ClassVar[str] = "test"

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> MinimumNormOutput:
        return MinimumNormOutput(torch.zeros_like(x), grad_evals=0)


def test_unverified_adversarials_replaced_by_x_with_warning(
    data: Digits, caplog: pytest.LogCaptureFixture
) -> None:
    x, y = data.x[:20], data.y[:20]
    with caplog.at_level(logging.WARNING, logger="attacks.base"):
        result = _OutOfBall()(data.model, x, y, epsilons=[0.0, 0.1])
    assert "failed verification" in caplog.text
    correct = data.model(x).argmax(1) == y
    assert torch.equal(result.adversarials[1][correct], x[correct])
    assert torch.equal(result.success[1], ~correct)


def test_minimum_norm_thresholds_read_off(data: Digits) -> None:
    x, y = data.x[:40], data.y[:40]
    result = _FixedPoint()(data.model, x, y, epsilons=[0.0, 1.0, 3.0, 100.0])
    with torch.no_grad():
        zero_pred = data.model(torch.zeros_like(x)).argmax(1)
        correct = data.model(x).argmax(1) == y
    assert result.min_norm is not None
    dist = x.flatten(1).norm(dim=1)
    expected = torch.where(zero_pred != y, dist, torch.full_like(dist, float("inf")))
    expected = torch.where(correct, expected, torch.zeros_like(dist))
    assert torch.allclose(result.min_norm, expected)
    for k, e in enumerate(result.epsilons):
        assert torch.equal(result.success[k], result.min_norm <= e)


# -- restarts run once each -------------------------------------------------------------------


class _Unbreakable(nn.Module):
    """Ten logits, class 0 ahead by ~100 whatever the input: no budget breaks an example, so
    every restart runs its full budget and the work done is proportional to the restarts."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)
        with torch.no_grad():
            self.linear.weight.mul_(0.1)
            self.linear.bias.copy_(torch.tensor([100.0] + [0.0] * 9))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1))  # (n, 1, 8, 8) -> (n, 10)


RESTARTED = [
    (b, n)
    for b, n in ALL
    if attack_class(n, backend=b).kind is AttackKind.FIXED_BUDGET
    and "restarts" in {f.name for f in fields(attack_class(n, backend=b))}  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("backend", "name"), RESTARTED)
def test_restarts_run_once_each(backend: str, name: str) -> None:
    """Each restart costs the same work: examples forwarded grow linearly in ``restarts`` (1, 2,
    3), not quadratically. An attack whose own loop (or library) runs the restarts is not
    restarted again by the template (pyautoattack's APGD was: its ``n_restarts`` ran
    ``restarts²`` times, overstating the reference in the APGD cross-check)."""
    model = _Unbreakable().eval()
    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    forwarded = [0]
    model.register_forward_hook(lambda m, inputs, out: forwarded.append(out.shape[0]))
    work = []
    for restarts in (1, 2, 3):
        forwarded.clear()
        attack = get_attack(name, backend=backend, **{**FAST.get(name, {}), "restarts": restarts})
        result = attack(model, x, y, epsilons=_eps(attack)[1:2])
        assert not bool(result.success.any())
        work.append(sum(forwarded))
    per_restart = work[1] - work[0]
    assert per_restart > 0
    assert work[2] - work[1] == per_restart, f"{backend}/{name}: examples forwarded {work}"
