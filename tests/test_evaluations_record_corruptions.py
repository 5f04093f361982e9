"""corruptions.csv and its summaries: mean corruption accuracy, mCE, relative mCE."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from evaluations.record.corruptions import (
    corruption_summary,
    read_corruptions,
    with_intervals,
    write_corruptions,
)


def _rows(name: str, granularity: str, clean: int, correct: dict[str, list[int]]) -> list[dict]:
    ident = {
        "checkpoint": name, "arch": "small_cnn", "dataset": "digits", "granularity": granularity,
        "sparsity_target": 0.0 if granularity == "dense" else 0.7,
        "sparsity_achieved": 0.0 if granularity == "dense" else 0.7, "training": "standard",
    }  # fmt: skip
    rows = [{**ident, "corruption": "none", "severity": 0, "n": 100, "correct": clean}]
    for c, per_severity in correct.items():
        rows += [
            {**ident, "corruption": c, "severity": s, "n": 100, "correct": k}
            for s, k in enumerate(per_severity, 1)
        ]
    return [{**r, "seconds": 0.1, "parameters": "cifar10-c"} for r in rows]


DENSE = {"fog": [90, 80], "gaussian_noise": [70, 60], "speckle_noise": [10, 10]}
SPARSE = {"fog": [80, 60], "gaussian_noise": [70, 60], "speckle_noise": [90, 90]}


def _frame(order: int = 1) -> pd.DataFrame:
    rows = _rows("dense", "dense", 95, DENSE) + _rows("window-70", "window", 90, SPARSE)
    return with_intervals(pd.DataFrame(rows[::order]))


def test_dense_scores_100_percent_and_sparse_follows_the_definitions() -> None:
    s = corruption_summary(_frame()).set_index("checkpoint")
    assert s.loc["dense", "mce"] == pytest.approx(1.0)
    assert s.loc["dense", "relative_mce"] == pytest.approx(1.0)
    # CE_fog = (20 + 40) / (10 + 20) = 2, CE_gauss = (30 + 40) / (30 + 40) = 1 -> mCE 1.5
    assert s.loc["window-70", "mce"] == pytest.approx(1.5)
    # relative: fog ((.2-.1)+(.4-.1)) / ((.1-.05)+(.2-.05)) = 2; gauss (.2+.3)/(.25+.35) = 5/6
    assert s.loc["window-70", "relative_mce"] == pytest.approx((2 + 5 / 6) / 2)
    # the held-out speckle_noise joins neither the mean nor the mCE
    assert s.loc["window-70", "mean_accuracy"] == pytest.approx((0.8 + 0.6 + 0.7 + 0.6) / 4)
    assert s.loc["window-70", "cells"] == 4 and s.loc["window-70", "reference"] == "dense"
    low, high = s.loc["window-70", ["mean_low", "mean_high"]]
    assert low < s.loc["window-70", "mean_accuracy"] < high


def test_summary_does_not_depend_on_row_order() -> None:
    a = corruption_summary(_frame()).set_index("checkpoint").sort_index()
    b = corruption_summary(_frame(-1)).set_index("checkpoint").sort_index()
    pd.testing.assert_frame_equal(a, b, check_like=True)


def test_no_dense_reference_gives_nan_not_a_number() -> None:
    frame = with_intervals(pd.DataFrame(_rows("window-70", "window", 90, SPARSE)))
    s = corruption_summary(frame).iloc[0]
    assert math.isnan(s["mce"]) and s["reference"] == ""


def test_write_read_round_trip_and_missing_columns(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert read_corruptions(tmp_path) is None
    write_corruptions(_frame(), tmp_path)
    back = read_corruptions(tmp_path)
    assert back is not None and len(back) == len(_frame())
    assert back["accuracy"].tolist() == pytest.approx(_frame()["accuracy"].tolist())
    with pytest.raises(ValueError, match="lack columns"):
        write_corruptions(_frame().drop(columns="n"), tmp_path)
