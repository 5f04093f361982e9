"""Attacks return their warnings (AttackResult.warnings) and log each of them once at most."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn

from attacks import Attack, AttackKind, FixedBudgetOutput, Norm, get_attack
from attacks.autoattack import AutoAttack, run_cascade
from tests.attack_helpers import Digits, digits


@pytest.fixture(scope="module")
def data() -> Digits:
    return digits()


@dataclass(frozen=True, repr=False)
class _Outside(Attack):
    """A fixed-budget attack whose every adversarial lies outside the ball (fails verification)."""

    name: ClassVar[str] = "outside"
    norm: ClassVar[Norm] = Norm.LINF
    kind: ClassVar[AttackKind] = AttackKind.FIXED_BUDGET
    backend: ClassVar[str] = "test"

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> FixedBudgetOutput:
        advs = torch.stack([(x + 2 * e).clamp(0, 1) for e in epsilons])
        return FixedBudgetOutput(advs, grad_evals=0)


def _records(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_failed_verification_is_returned_and_logged_once(
    data: Digits, caplog: pytest.LogCaptureFixture
) -> None:
    x, y = data.x[:20], data.y[:20]
    with caplog.at_level(logging.WARNING, logger="attacks"):
        result = _Outside()(data.model, x, y, epsilons=[0.0, 0.1, 0.2])
    failed = [w for w in result.warnings if "failed verification" in w]
    assert len(failed) == 2  # one per positive epsilon
    assert failed[0].startswith("test/outside: ") and "at eps=0.1 failed verification" in failed[0]
    assert _records(caplog, "failed verification") == failed
    assert result.verify_failed is not None and int(result.verify_failed.sum()) > 0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="attacks"):
        quiet = _Outside()(data.model, x, y, epsilons=[0.0, 0.1, 0.2], log_warnings=False)
    assert quiet.warnings == result.warnings  # returned, for the caller to log
    assert caplog.records == []


def test_unit_warnings_come_first_and_log_warnings_false_is_silent(
    data: Digits, caplog: pytest.LogCaptureFixture
) -> None:
    x, y = data.x[:8], data.y[:8]
    with caplog.at_level(logging.WARNING, logger="attacks"):
        result = _Outside()(data.model, x, y, epsilons=[0.0, 0.1, 8.0], log_warnings=False)
    assert caplog.records == []
    assert "did you mean 8/255" in result.warnings[0]
    assert all("failed verification" in w for w in result.warnings[1:])
    with caplog.at_level(logging.WARNING, logger="attacks"):
        get_attack("fgsm")(data.model, x, y, epsilons=[0.0, 8.0], warn_units=False)
    assert _records(caplog, "did you mean") == []


def test_cascade_logs_an_epsilon_unit_warning_once_not_per_stage(
    data: Digits, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    cheap = [get_attack("fgsm"), get_attack("pgd", steps=2)]  # stages run at eps 2.0 too
    monkeypatch.setattr(AutoAttack, "stages", lambda self, num_classes=10: cheap)
    x, y = data.x[:12], data.y[:12]
    with caplog.at_level(logging.WARNING, logger="attacks"):
        result = AutoAttack()(data.model, x, y, epsilons=[0.0, 0.01, 2.0])
    assert result.details is not None and sum(r[2] for r in result.details["stage_attacked"]) > 0
    assert len(_records(caplog, "did you mean")) == 1
    assert [w for w in result.warnings if "did you mean" in w] == result.warnings[:1]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="attacks"):
        AutoAttack()(data.model, x, y, epsilons=[0.0, 0.01, 2.0], warn_units=False)
    assert _records(caplog, "did you mean") == []


def test_cascade_returns_its_stages_warnings_and_logs_them_once(
    data: Digits, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(AutoAttack, "stages", lambda self, num_classes=10: [_Outside()])
    x, y = data.x[:10], data.y[:10]
    with caplog.at_level(logging.WARNING, logger="attacks"):
        result = AutoAttack()(data.model, x, y, epsilons=[0.0, 0.1, 0.2])
    stage = [w for w in result.warnings if w.startswith("test/outside: ")]
    assert len(stage) == 2  # the stage's failed verification at each positive epsilon
    assert _records(caplog, "failed verification") == stage  # logged by the cascade, once
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="attacks"):
        quiet = AutoAttack()(data.model, x, y, epsilons=[0.0, 0.1, 0.2], log_warnings=False)
    assert quiet.warnings == result.warnings
    assert caplog.records == []


def test_run_cascade_collects_stage_warnings_without_unit_ones(data: Digits) -> None:
    x, y = data.x[:5], data.y[:5]
    out = run_cascade([_Outside()], data.model, x, y, [0.1, 0.2, 3.0])
    assert out.details is not None
    warnings = out.details["warnings"]  # at 3.0 every image is in the ball: no failure, and
    assert len(warnings) == 2  # the stage's epsilon-unit warning is the cascade's to give
    assert all("failed verification" in w for w in warnings)
