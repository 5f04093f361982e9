"""The run invariant IBP-verified <= attacked robust accuracy (evaluations/record/certified_checks.py)."""

from __future__ import annotations

import pandas as pd

from evaluations.record.certified_checks import check_verified_le_attacked


def _results(robust: list[int], n: int = 100) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "checkpoint": "dense",
            "attack": ["autoattack", "apgd-ce"],
            "backend": "native",
            "norm": "linf",
            "epsilon": [0.1, 0.1],
            "n": n,
            "robust_correct": robust,
        }
    )


def _certified(verified: int, n: int = 100, method: str = "ibp") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "checkpoint": ["dense"],
            "method": [method],
            "norm": ["linf"],
            "radius": [0.1 + 1e-12],  # eps read back from CSV
            "n": [n],
            "certified_correct": [verified],
        }
    )


def test_passes_when_verified_is_at_most_every_attack() -> None:
    check = check_verified_le_attacked(_results([40, 45]), _certified(40))
    assert check["passed"] and "all 2 comparisons" in check["detail"]


def test_fails_naming_the_attack_when_verified_exceeds_it() -> None:
    check = check_verified_le_attacked(_results([38, 45]), _certified(40))
    assert not check["passed"]
    assert "autoattack/native robust 38" in check["detail"] and "1 of 2" in check["detail"]


def test_different_examples_and_other_methods_are_not_compared() -> None:
    check = check_verified_le_attacked(_results([10, 10], n=50), _certified(40))
    assert check["passed"] and "not comparable" in check["detail"]
    assert check_verified_le_attacked(_results([10, 10]), _certified(40, method="smoothing"))[
        "passed"
    ]
