"""Tests for evaluations.record.metrics: Wilson intervals, AUC, cell summaries and invariant checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from evaluations.record.metrics import (
    WORST_CASE,
    check_invariants,
    pgd_vs_fgsm,
    robustness_auc,
    robustness_auc_table,
    summarize_cell,
    wilson_interval,
)
from tests.test_evaluations_results import synthetic_results


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (8, 10, 0.4902, 0.9433),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (50, 100, 0.4038, 0.5962),
        (1, 1, 0.2065, 1.0),
    ],
)
def test_wilson_known_values(k: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(k, n)
    assert isinstance(lo, float) and isinstance(hi, float)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)


def test_wilson_edges_are_exact() -> None:
    assert wilson_interval(0, 7)[0] == 0.0
    assert wilson_interval(7, 7)[1] == 1.0
    lo, hi = wilson_interval(0, 0)
    assert math.isnan(lo) and math.isnan(hi)


def test_wilson_vectorized_matches_scalar() -> None:
    k = np.array([0, 3, 8, 10, 0])
    n = np.array([10, 10, 10, 10, 0])
    lo, hi = wilson_interval(k, n)
    assert lo.shape == hi.shape == (5,)
    for i in range(4):
        assert (lo[i], hi[i]) == pytest.approx(wilson_interval(int(k[i]), int(n[i])))
    assert np.isnan(lo[4]) and np.isnan(hi[4])
    assert np.all(lo[:4] <= k[:4] / n[:4]) and np.all(hi[:4] >= k[:4] / n[:4])
    lo2, _ = wilson_interval(np.array([[1, 2], [3, 4]]), 5)  # broadcasting
    assert lo2.shape == (2, 2)


def test_wilson_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(-1, 10)


def test_robustness_auc() -> None:
    assert robustness_auc([0, 1], [1, 0]) == pytest.approx(0.5)
    assert robustness_auc([0.2, 0.0, 0.1], [0.0, 1.0, 0.5]) == pytest.approx(0.5)  # unsorted
    assert robustness_auc([0, 0.1, 0.3], [0.8, 0.8, 0.8]) == pytest.approx(0.8)
    assert robustness_auc([0.1], [0.4]) == pytest.approx(0.4)
    assert math.isnan(robustness_auc([], []))
    with pytest.raises(ValueError):
        robustness_auc([0, 1], [1.0])


def test_summarize_cell_counts() -> None:
    clean = np.array([1, 1, 1, 1, 0], dtype=bool)  # (N,)
    robust = np.array(
        [
            [1, 1, 1, 1, 0],  # eps 0: robust == clean
            [1, 1, 0, 0, 0],  # eps .1: two flipped
            [0, 0, 0, 0, 0],  # eps .2: all flipped
        ],
        dtype=bool,
    )  # (K, N)
    norms = np.array(
        [
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [np.nan, np.nan, 0.05, 0.09, 0.0],
            [0.1, 0.2, 0.3, 0.4, 0.0],
        ]
    )
    rows = summarize_cell([0.0, 0.1, 0.2], clean, robust, norms)
    assert [r["epsilon"] for r in rows] == [0.0, 0.1, 0.2]
    assert [r["robust_correct"] for r in rows] == [4, 2, 0]
    assert all(r["n"] == 5 and r["clean_correct"] == 4 for r in rows)
    assert rows[0]["clean_accuracy"] == rows[0]["robust_accuracy"] == 0.8
    assert [r["success_rate"] for r in rows] == [0.0, 0.5, 1.0]
    assert math.isnan(rows[0]["median_norm"])  # no successful attack at eps 0
    assert rows[1]["median_norm"] == pytest.approx(0.07)
    assert rows[2]["median_norm"] == pytest.approx(0.25)  # clean-misclassified example excluded
    lo, hi = wilson_interval(2, 5)
    assert (rows[1]["robust_accuracy_low"], rows[1]["robust_accuracy_high"]) == (lo, hi)
    json.dumps(rows)  # plain Python types
    assert all(type(r["robust_correct"]) is int for r in rows)


def test_summarize_cell_without_clean_correct_examples() -> None:
    rows = summarize_cell([0.0], np.zeros(3, bool), np.zeros((1, 3), bool))
    assert math.isnan(rows[0]["success_rate"]) and math.isnan(rows[0]["median_norm"])


def test_summarize_cell_checks_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        summarize_cell([0.0, 0.1], np.ones(3, bool), np.ones((3, 2), bool))
    with pytest.raises(ValueError, match="norms"):
        summarize_cell([0.0], np.ones(3, bool), np.ones((1, 3), bool), np.ones((2, 3)))


def test_invariants_pass_on_consistent_results() -> None:
    df, _ = synthetic_results()
    checks = check_invariants(df)
    assert set(checks) == {
        "eps0_robust_equals_clean",
        "worst_case_monotone",
        "worst_case_le_each_attack",
    }
    assert all(c["passed"] for c in checks.values()), checks
    json.dumps(checks)


def _row(df: pd.DataFrame, checkpoint: str, attack: str, norm: str, eps: float) -> pd.Index:
    mask = (
        (df["checkpoint"] == checkpoint)
        & (df["attack"] == attack)
        & (df["norm"] == norm)
        & np.isclose(df["epsilon"], eps)
    )
    assert mask.sum() == 1
    return df.index[mask]


def test_invariant_eps0_detects_violation() -> None:
    df, _ = synthetic_results(with_l2=False)
    idx = _row(df, "window70", "pgd", "linf", 0.0)
    df.loc[idx, "robust_correct"] -= 1
    checks = check_invariants(df)
    assert not checks["eps0_robust_equals_clean"]["passed"]
    assert "window70/pgd" in checks["eps0_robust_equals_clean"]["detail"]
    assert checks["worst_case_monotone"]["passed"]


def test_invariant_monotone_detects_violation() -> None:
    df, _ = synthetic_results(with_l2=False)
    idx = _row(df, "dense", WORST_CASE, "linf", 0.2)
    df.loc[idx, "robust_correct"] = df.loc[_row(df, "dense", WORST_CASE, "linf", 0.1), "n"].iloc[0]
    checks = check_invariants(df)
    assert not checks["worst_case_monotone"]["passed"]
    assert "dense/linf" in checks["worst_case_monotone"]["detail"]


def test_invariant_worst_case_le_each_attack_detects_violation() -> None:
    df, _ = synthetic_results(with_l2=False)
    fgsm = df.loc[_row(df, "dense", "fgsm", "linf", 0.1), "robust_correct"].iloc[0]
    pgd = df.loc[_row(df, "dense", "pgd", "linf", 0.1), "robust_correct"].iloc[0]
    df.loc[_row(df, "dense", WORST_CASE, "linf", 0.1), "robust_correct"] = min(fgsm, pgd) + 1
    checks = check_invariants(df)
    assert not checks["worst_case_le_each_attack"]["passed"]
    assert "eps 0.1" in checks["worst_case_le_each_attack"]["detail"]


def test_invariants_on_empty_frame_pass_with_explanation() -> None:
    df, _ = synthetic_results(with_l2=False)
    checks = check_invariants(df.iloc[0:0])
    assert all(c["passed"] and "nothing to check" in c["detail"] for c in checks.values())


def test_pgd_vs_fgsm() -> None:
    df, _ = synthetic_results(with_l2=False)
    ok = pgd_vs_fgsm(df)
    assert ok["passed"] and ok["comparisons"] == 6 and ok["violations"] == []
    idx = _row(df, "window70", "pgd", "linf", 0.2)
    fgsm_acc = df.loc[_row(df, "window70", "fgsm", "linf", 0.2), "robust_accuracy"].iloc[0]
    df.loc[idx, "robust_accuracy"] = fgsm_acc + 0.005  # within 1 point
    assert pgd_vs_fgsm(df)["passed"]
    df.loc[idx, "robust_accuracy"] = fgsm_acc + 0.05  # 5 points weaker than FGSM
    bad = pgd_vs_fgsm(df)
    assert not bad["passed"] and len(bad["violations"]) == 1
    assert bad["violations"][0]["excess_points"] == pytest.approx(5.0)
    assert pgd_vs_fgsm(df, tolerance_points=10.0)["passed"]
    json.dumps(bad)
    none = pgd_vs_fgsm(df[df["attack"] != "fgsm"])
    assert none["passed"] and none["comparisons"] == 0


def test_robustness_auc_table() -> None:
    df, _ = synthetic_results()
    table = robustness_auc_table(df, attacks=[WORST_CASE])
    assert len(table) == 4  # 2 checkpoints x 2 norms
    assert table["auc"].between(0, 1).all()
