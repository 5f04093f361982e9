"""Tests for evaluations.record.results: schema, CSV/parquet round trip, sidecar, minimum-norm store.

Also home of the synthetic-results helpers shared by the other ``test_evaluations_*`` modules.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluations.record.metrics import WORST_CASE, summarize_cell
from evaluations.record.results import (
    MIN_NORM_COLUMNS,
    RESULT_COLUMNS,
    make_min_norms,
    read_min_norms,
    read_results,
    read_sidecar,
    validate_results,
    write_min_norms,
    write_results,
    write_sidecar,
)
from robustbench_sparse.errors import UserError

# (name, granularity, target, achieved, clean accuracy)
CHECKPOINTS = (
    ("dense", "dense", 0.0, 0.0, 0.9),
    ("window70", "window", 0.7, 0.667, 0.85),
)
EPS = {"linf": [0.0, 0.1, 0.2], "l2": [0.0, 0.5, 1.0]}
ATTACKS = {"linf": ("fgsm", "pgd"), "l2": ("pgd", "cw")}


def synthetic_results(
    n: int = 40, seed: int = 0, with_l2: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A consistent results frame and its C&W minimum-norm frame, built through summarize_cell.

    Each example has a random "robustness radius"; an attack breaks it when eps exceeds the radius
    scaled by the attack's strength (PGD stronger than FGSM), so all invariants hold.
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    min_norm_frames: list[pd.DataFrame] = []
    norms = ("linf", "l2") if with_l2 else ("linf",)
    for name, granularity, target, achieved, clean_acc in CHECKPOINTS:
        clean = rng.random(n) < clean_acc  # (N,)
        radius = rng.random(n) * 0.3  # (N,) in units of the linf grid
        for norm in norms:
            eps = np.asarray(EPS[norm])
            scale = 1.0 if norm == "linf" else 5.0
            robust_all = []
            for attack in ATTACKS[norm]:
                strength = {"fgsm": 1.0, "pgd": 1.5, "cw": 1.3}[attack]
                broken_at = radius * scale / strength  # (N,) smallest eps that breaks the example
                if attack == "cw":  # minimum-norm: some examples never broken (inf)
                    broken_at = np.where(broken_at < 0.9, broken_at, np.inf)
                    min_norm = np.where(clean, broken_at, 0.0)
                    min_norm_frames.append(make_min_norms(name, "cw", "foolbox", min_norm, clean))
                robust = clean[None, :] & (eps[:, None] < broken_at[None, :])  # (K, N)
                norms_kn = np.where(robust, np.nan, np.minimum(eps[:, None], broken_at[None, :]))
                robust_all.append(robust)
                for row in summarize_cell(eps, clean, robust, norms_kn):
                    rows.append(
                        {
                            "checkpoint": name,
                            "arch": "small_cnn",
                            "dataset": "digits",
                            "granularity": granularity,
                            "sparsity_target": target,
                            "sparsity_achieved": achieved,
                            "attack": attack,
                            "backend": "native",
                            "norm": norm,
                            **row,
                            "seconds": 0.5,
                            "params": json.dumps({"steps": 10} if attack == "pgd" else {}),
                            "grad_evals": 10 * n,
                        }
                    )
            worst = np.logical_and.reduce(robust_all)  # (K, N)
            for row in summarize_cell(eps, clean, worst, None):
                rows.append(
                    {
                        "checkpoint": name,
                        "arch": "small_cnn",
                        "dataset": "digits",
                        "granularity": granularity,
                        "sparsity_target": target,
                        "sparsity_achieved": achieved,
                        "attack": WORST_CASE,
                        "backend": "native",
                        "norm": norm,
                        **row,
                        "seconds": 0.0,
                        "params": "{}",
                        "grad_evals": 0,
                    }
                )
    df = pd.DataFrame(rows)
    df = df[[*RESULT_COLUMNS, "grad_evals"]]
    min_norms = (
        pd.concat(min_norm_frames, ignore_index=True)
        if min_norm_frames
        else pd.DataFrame(columns=MIN_NORM_COLUMNS)
    )
    return df, min_norms


def write_synthetic_dir(path: Path, **kwargs: object) -> pd.DataFrame:
    """Write results, min norms and a sidecar into ``path``; return the results frame."""
    df, min_norms = synthetic_results(**kwargs)  # type: ignore[arg-type]
    write_results(df, path)
    if not min_norms.empty:
        write_min_norms(path, min_norms)
    write_sidecar(
        path,
        {
            "versions": {"python": "3.11", "torch": "2.4.0"},
            "device": "cpu (2 threads, x86_64)",
            "git_revision": "abc123",
            "seeds": {"data": 0, "attack": 1},
            "total_seconds": 12.5,
            "config": {"n": 40, "attacks": ["fgsm", "pgd", "cw"]},
            "command": "rbs run --recipe digits-smoke --out runs/smoke",
        },
    )
    return df


# --------------------------------------------------------------------------- tests


def test_synthetic_frame_follows_schema() -> None:
    df, min_norms = synthetic_results()
    validate_results(df)
    assert list(df.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    # one row per (checkpoint, attack, backend, norm, epsilon)
    assert not df.duplicated(["checkpoint", "attack", "backend", "norm", "epsilon"]).any()
    assert list(min_norms.columns) == MIN_NORM_COLUMNS


def test_validate_names_missing_columns() -> None:
    df, _ = synthetic_results(with_l2=False)
    with pytest.raises(ValueError, match=r"missing columns: .*robust_correct.*params"):
        validate_results(df.drop(columns=["robust_correct", "params"]))


def test_validate_rejects_bad_values() -> None:
    df, _ = synthetic_results(with_l2=False)
    bad = df.copy()
    bad.loc[0, "norm"] = "l0"
    with pytest.raises(ValueError, match="unknown norms"):
        validate_results(bad)
    bad = df.copy()
    bad.loc[0, "robust_correct"] = bad.loc[0, "n"] + 1
    with pytest.raises(ValueError, match="robust_correct"):
        validate_results(bad)


def test_write_read_round_trip_csv_and_parquet(tmp_path: Path) -> None:
    df, _ = synthetic_results()
    df.loc[0, "backend"] = ""  # empty strings must survive the CSV
    csv_path, parquet_path = write_results(df, tmp_path)
    assert csv_path.name == "results.csv" and parquet_path.name == "results.parquet"
    from_parquet = read_results(tmp_path)
    from_csv = read_results(csv_path)
    pd.testing.assert_frame_equal(from_parquet, from_csv)
    assert from_parquet["n"].dtype == np.int64
    assert from_parquet.loc[0, "backend"] == ""
    # NaNs (success_rate / median_norm) survive both formats
    assert from_csv["median_norm"].isna().sum() == df["median_norm"].isna().sum() > 0
    np.testing.assert_allclose(
        from_csv["robust_accuracy_low"].to_numpy(), df["robust_accuracy_low"].to_numpy(), rtol=0
    )
    # no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "results.parquet"]


def test_read_results_prefers_parquet_and_falls_back_to_csv(tmp_path: Path) -> None:
    df, _ = synthetic_results(with_l2=False)
    write_results(df, tmp_path)
    (tmp_path / "results.parquet").unlink()
    assert len(read_results(tmp_path)) == len(df)
    (tmp_path / "results.csv").unlink()
    with pytest.raises(UserError, match="results"):
        read_results(tmp_path)


def test_enum_values_are_written_as_their_value(tmp_path: Path) -> None:
    import enum

    class Norm(str, enum.Enum):
        LINF = "linf"

    df, _ = synthetic_results(with_l2=False)
    df["norm"] = Norm.LINF
    write_results(df, tmp_path)
    assert set(read_results(tmp_path)["norm"]) == {"linf"}


def test_sidecar_round_trip_is_strict_json(tmp_path: Path) -> None:
    side = {
        "total_seconds": np.float64(3.5),
        "seeds": {"data": np.int64(1)},
        "nan": math.nan,
        "path": tmp_path,
        "tags": {"b", "a"},
        "invariants": {"x": {"passed": np.bool_(True), "detail": "ok"}},
    }
    path = write_sidecar(tmp_path, side)
    assert path.name == "results.json"
    text = path.read_text()
    assert "NaN" not in text
    back = read_sidecar(tmp_path)
    assert back["total_seconds"] == 3.5 and back["seeds"] == {"data": 1}
    assert back["nan"] is None and back["path"] == str(tmp_path) and back["tags"] == ["a", "b"]
    assert back["invariants"]["x"]["passed"] is True
    assert read_sidecar(tmp_path / "missing", missing_ok=True) == {}
    with pytest.raises(UserError):
        read_sidecar(tmp_path / "missing")


def test_min_norms_round_trip(tmp_path: Path) -> None:
    _, min_norms = synthetic_results()
    assert np.isinf(min_norms["min_norm"]).any()
    path = write_min_norms(tmp_path, min_norms)
    assert path.name == "attack_min_norms.parquet"
    back = read_min_norms(tmp_path)
    pd.testing.assert_frame_equal(back, min_norms, check_dtype=False)
    assert back["example"].dtype == np.int64 and back["clean_correct"].dtype == bool
    empty = read_min_norms(tmp_path / "nothing", missing_ok=True)
    assert empty.empty and list(empty.columns) == MIN_NORM_COLUMNS


def test_make_min_norms_checks_shapes() -> None:
    with pytest.raises(ValueError, match="differ"):
        make_min_norms("c", "cw", "foolbox", [1.0, 2.0], [True])


def test_write_table_orders_columns_and_refuses_missing_ones(tmp_path: Path) -> None:
    from evaluations.record.results import write_table

    df = pd.DataFrame({"b": [1, 2], "a": [3, 4], "extra": [0, 0]})
    path = write_table(df, ["a", "b"], tmp_path / "sub" / "t.csv", "test")
    assert path.read_text().splitlines() == ["a,b", "3,1", "4,2"]
    with pytest.raises(ValueError, match=r"test rows lack columns \['c'\]"):
        write_table(df, ["a", "c"], tmp_path / "u.csv", "test")
    assert not (tmp_path / "u.csv").exists()
