"""Native AutoAttack cascades: stage order, per-example worst case, nested grid, details."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any, ClassVar

import pytest
import torch

from attacks import AttackConfigError, get_attack, verify_adversarials
from attacks.autoattack import PLUS_STAGES, STANDARD_STAGES, AutoAttack
from attacks.registry import list_attacks
from tests.attack_helpers import Digits, digits

EPS = [0.0, 0.05, 0.1, 0.15]


@pytest.fixture(scope="module")
def data() -> Digits:
    return digits()


@dataclass(frozen=True, repr=False)
class _TwoStages(AutoAttack):
    """The cascade machinery on two cheap stages (APGD-CE -> APGD-T, few iterations)."""

    stage_specs: ClassVar[tuple[tuple[str, dict[str, Any]], ...]] = (
        ("apgd-ce", {"restarts": 1}),
        ("apgd-t", {"restarts": 1, "n_target_classes": 3}),
    )


def test_stage_lists_match_the_reference_versions() -> None:
    assert [s for s, _ in STANDARD_STAGES] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert [s for s, _ in PLUS_STAGES] == [
        "apgd-ce",
        "apgd-dlr",
        "fab",
        "square",
        "apgd-t",
        "fab-t",
    ]
    assert dict(PLUS_STAGES)["apgd-ce"]["restarts"] == 5
    assert dict(PLUS_STAGES)["apgd-dlr"]["restarts"] == 5
    assert dict(PLUS_STAGES)["fab"]["restarts"] == 5


def test_cascade_details_and_invariants(data: Digits) -> None:
    x, y = data.x[:80], data.y[:80]
    result = _TwoStages()(data.model, x, y, epsilons=EPS)
    d = result.details
    assert d is not None and d["stages"] == ["apgd-ce", "apgd-t"]
    acc = result.robust_accuracy()
    assert all(b <= a for a, b in pairwise(acc))
    clean = data.model(x).argmax(1) == y
    assert acc[0] == pytest.approx(float(clean.float().mean()))
    for k, e in enumerate(EPS):
        assert bool(verify_adversarials(result.adversarials[k], x, e, AutoAttack.norm).all())
    by = d["broken_by"]  # (K, N)
    assert by.shape == result.success.shape
    # Every example a stage broke is counted broken; robust ones have no stage.
    assert bool((result.success | ~clean)[by >= 0].all())
    assert bool((by[result.success & clean] >= 0).all())
    # Newly broken per stage and eps add up to the broken clean-correct examples.
    broken = (result.success & clean).sum(dim=1).tolist()  # (K,)
    cumulative = torch.tensor(d["stage_broken"]).sum(dim=0).cumsum(0).tolist()
    assert cumulative == broken
    # Stage 2 attacks only what stage 1 left; eps k+1 only what eps k left.
    attacked = d["stage_attacked"]
    for k in range(1, len(EPS)):
        assert attacked[1][k] == attacked[0][k] - d["stage_broken"][0][k]
        if k + 1 < len(EPS):
            assert attacked[0][k + 1] == attacked[1][k] - d["stage_broken"][1][k]
    assert result.grad_evals == sum(d["stage_grad_evals"])
    assert 0 < d["work_ratio"] <= 1
    assert all(f >= g for f, g in zip(d["stage_forwards"], d["stage_grad_evals"], strict=True))


def test_cascade_is_per_example_worst_case(data: Digits) -> None:
    x, y = data.x[:80], data.y[:80]
    cascade = _TwoStages(seed=0)(data.model, x, y, epsilons=EPS)
    first = get_attack("apgd-ce", seed=0)(data.model, x, y, epsilons=EPS)
    # At the first positive eps the first stage is the same run (same examples, same seed), so
    # the cascade breaks every example it breaks, and more (the later stage).
    assert bool((cascade.success[1] >= first.success[1]).all())
    # Later epsilons draw different random starts (other survivors): compare counts loosely.
    for a, b in zip(cascade.robust_accuracy(), first.robust_accuracy(), strict=True):
        assert a <= b + 2 / 80


def test_seed_reproducible(data: Digits) -> None:
    x, y = data.x[:40], data.y[:40]
    a = _TwoStages(seed=1)(data.model, x, y, epsilons=EPS)
    b = _TwoStages(seed=1)(data.model, x, y, epsilons=EPS)
    assert torch.equal(a.adversarials, b.adversarials)
    assert torch.equal(a.details["broken_by"], b.details["broken_by"])  # type: ignore[index]


def test_no_clean_correct_example(data: Digits) -> None:
    x, y = data.x[:4], (data.model(data.x[:4]).argmax(1) + 1) % 10  # all misclassified
    result = _TwoStages()(data.model, x, y, epsilons=EPS)
    assert result.robust_accuracy() == [0.0] * len(EPS)
    assert result.grad_evals == 0
    assert bool((result.details["broken_by"] == -1).all())  # type: ignore[index]


def test_bad_seed() -> None:
    with pytest.raises(AttackConfigError, match="seed"):
        get_attack("autoattack", seed="x")


@pytest.mark.skipif(
    not {"fab", "fab-t", "square"} <= set(list_attacks("native")),
    reason="the native fab / fab-t / square stages are not registered yet",
)
@pytest.mark.parametrize("name", ["autoattack", "autoattack-l2", "autoattack-plus"])
def test_stages_are_built_from_the_registry(name: str) -> None:
    attack = get_attack(name, seed=7)
    stages = attack.stages()
    specs = PLUS_STAGES if "plus" in name else STANDARD_STAGES
    suffix = "-l2" if name.endswith("-l2") else ""
    assert [s.name for s in stages] == [base + suffix for base, _ in specs]
    for stage, (_, params) in zip(stages, specs, strict=True):
        assert stage.norm is attack.norm
        assert stage.params()["seed"] == 7
        for key, value in params.items():
            assert stage.params()[key] == value


@pytest.mark.slow
@pytest.mark.skipif(
    not {"fab-t", "square"} <= set(list_attacks("native")),
    reason="the native fab-t / square stages are not registered yet",
)
@pytest.mark.parametrize(("name", "eps"), [("autoattack", 0.1), ("autoattack-l2", 1.0)])
def test_full_standard_cascade(data: Digits, name: str, eps: float) -> None:
    x, y = data.x[:40], data.y[:40]
    result = get_attack(name)(data.model, x, y, epsilons=[0.0, eps])
    assert result.details is not None
    suffix = "-l2" if name.endswith("-l2") else ""
    assert result.details["stages"] == [
        s + suffix for s in ("apgd-ce", "apgd-t", "fab-t", "square")
    ]
    assert result.robust_accuracy()[1] < result.robust_accuracy()[0]
    assert bool(verify_adversarials(result.adversarials[1], x, eps, get_attack(name).norm).all())
