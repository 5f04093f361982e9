"""Tests for :mod:`evaluations.engine.spec`: attack specs, the grid config, epsilon grids."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest

from attacks import Norm
from evaluations.engine.spec import AttackSpec, GridConfig, validate_epsilons
from robustbench_sparse.datasets import default_eps_grid
from robustbench_sparse.errors import UserError


def test_validate_epsilons_sorts_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="evaluations.engine.spec"):
        assert validate_epsilons([0.3, 0, 0.1], "linf") == [0.0, 0.1, 0.3]
    assert any("sorted the linf epsilon grid" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="evaluations.engine.spec"):
        assert validate_epsilons([0, 0.5, 1], "l2") == [0.0, 0.5, 1.0]
    assert not any("sorted" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ([0.0, 0.1, 0.1], "duplicates"),
        ([0.0, -0.1], "invalid"),
        ([0.0, math.nan], "invalid"),
        ([0.0, math.inf], "invalid"),
        ([], "empty"),
    ],
)
def test_validate_epsilons_rejects(values: list[float], match: str) -> None:
    with pytest.raises(UserError, match=match):
        validate_epsilons(values, "linf")


def test_grid_config_defaults_to_the_dataset_grid() -> None:
    grid = GridConfig()
    assert grid.epsilons(Norm.LINF, "digits") == default_eps_grid("digits", "linf")
    assert grid.epsilons(Norm.L2, "digits") == default_eps_grid("digits", "l2")
    given = GridConfig(linf_epsilons=(0.2, 0.0))
    assert given.epsilons(Norm.LINF, "digits") == [0.0, 0.2]
    with pytest.raises(UserError):
        GridConfig(linf_epsilons=(0.0, -1.0)).epsilons(Norm.LINF, "digits")


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"limit": -5}, {"batch_size": 0}, {"limit": 1.5}])
def test_grid_config_rejects_bad_limit_and_batch_size(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UserError):
        GridConfig(**kwargs)


def test_attack_spec_label_and_build() -> None:
    spec = AttackSpec("pgd", "native", (("steps", 3),))
    assert spec.label == "pgd@native"
    assert spec.build().params()["steps"] == 3
