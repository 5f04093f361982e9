"""certified.csv rows (evaluations.record.certified): counts, intervals, write/read round trip."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from scipy.stats import beta

from evaluations.record.certified import (
    COLUMNS,
    certified_rows,
    example_file,
    read_certified,
    write_certified,
    write_examples,
)

IDENT = {
    "checkpoint": "window-70",
    "arch": "small_cnn",
    "dataset": "digits",
    "granularity": "window",
    "sparsity_target": 0.7,
    "sparsity_achieved": 0.69,
    "training": "Gaussian noise (σ 0.25)",
}


def test_rows_carry_the_clopper_pearson_interval_over_examples() -> None:
    rows = certified_rows(IDENT, method="smoothing", norm="l2", radii=[0, 0.5], correct=[30, 7],
                          n=40, abstained=3, sigma=0.25, n0=100, n_samples=10_000, alpha=0.001)  # fmt: skip
    assert [r["certified_accuracy"] for r in rows] == [0.75, 7 / 40]
    for r in rows:
        k, n = r["certified_correct"], r["n"]
        assert r["certified_accuracy_low"] == pytest.approx(beta.ppf(0.025, k, n - k + 1))
        assert r["certified_accuracy_high"] == pytest.approx(beta.ppf(0.975, k + 1, n - k))
        assert r["abstained"] == 3 and r["sigma"] == 0.25


def test_write_read_round_trip_and_ibp_nans(tmp_path: Path) -> None:
    rows = certified_rows(IDENT, method="ibp", norm="linf", radii=[0.1], correct=[5], n=10)
    write_certified(pd.DataFrame(rows), tmp_path)
    df = read_certified(tmp_path)
    assert df is not None and tuple(df.columns) == COLUMNS
    assert math.isnan(df["sigma"].iloc[0]) and df["abstained"].iloc[0] == 0
    assert read_certified(tmp_path / "absent") is None
    with pytest.raises(ValueError, match="lack columns"):
        write_certified(pd.DataFrame(rows).drop(columns=["n"]), tmp_path)


def test_example_files_are_named_by_checkpoint_and_method(tmp_path: Path) -> None:
    path = write_examples(tmp_path, "a/b", "smoothing", {"index": [4, 9], "radius": [0.3, -1.0]})
    assert path == example_file(tmp_path, "a/b", "smoothing") and path.name == "a_b@smoothing.csv"
    assert pd.read_csv(path)["radius"].tolist() == [0.3, -1.0]
