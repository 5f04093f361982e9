"""Minimum-norm security curves: the per-example table, the step curve, median + bootstrap, AUC."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from attacks import AttackKind, get_attack
from evaluations.engine.cell_attack import attack_cell
from evaluations.record.cells import CellOutcome, CellRecord, worst_case
from evaluations.record.security import (
    MIN_NORMS_CSV,
    MIN_NORMS_FILE,
    MISCLASSIFIED,
    min_norm_table,
    read_min_norm_table,
    robust_accuracy_at,
    security_curve,
    security_summary,
    write_min_norm_table,
)
from tests.attack_helpers import digits

EPS = [0.0, 0.1, 0.2, 0.3]


def _cell(
    attack: str,
    kind: AttackKind,
    robust: list[list[bool]],
    clean: list[bool],
    min_norm: list[float] | None = None,
    norm: str = "linf",
) -> CellRecord:
    rob = np.array(robust, dtype=bool)  # (K, N)
    outcome = CellOutcome(
        epsilons=list(EPS),
        clean_correct=np.array(clean),
        robust=rob,
        norms=np.zeros(rob.shape),
        min_norm=None if min_norm is None else np.array(min_norm),
        seconds=0.0,
        grad_evals=0,
        params={},
    )
    return CellRecord("m", attack, "native", norm, kind, False, outcome)


def _synthetic() -> list[CellRecord]:
    clean = [True, True, True, True, False]
    # example 0: PGD breaks at 0.2; 1: never; 2: PGD at 0.1; 3: only the min-norm attack (0.15)
    pgd = _cell(
        "pgd",
        AttackKind.FIXED_BUDGET,
        [
            [True, True, True, True, False],
            [True, True, False, True, False],
            [False, True, False, True, False],
            [False, True, False, True, False],
        ],
        clean,
    )
    cw = _cell(
        "cw",
        AttackKind.MINIMUM_NORM,
        [
            [True, True, True, True, False],
            [True, True, True, True, False],
            [True, True, True, False, False],
            [False, True, True, False, False],
        ],
        clean,
        min_norm=[0.25, math.inf, 0.12, 0.15, 0.0],
    )
    return [pgd, cw]


def test_table_picks_the_smallest_budget_and_who_found_it() -> None:
    table = min_norm_table(_synthetic())
    assert list(table["example"]) == [0, 1, 2, 3, 4]
    assert list(table["grid_epsilon"]) == [0.2, math.inf, 0.1, math.inf, math.inf]
    assert list(table["min_norm"]) == [0.25, math.inf, 0.12, 0.15, math.inf]
    assert list(table["best_norm"]) == [0.2, math.inf, 0.1, 0.15, 0.0]
    assert list(table["found_by"]) == ["pgd", "", "pgd", "cw", MISCLASSIFIED]
    assert list(table["clean_correct"]) == [True, True, True, True, False]


def test_step_curve_equals_the_grid_worst_case_at_every_grid_epsilon() -> None:
    cells = _synthetic()
    table = min_norm_table(cells)
    wc = worst_case([c.outcome for c in cells])  # the grid's per-example worst case
    at_grid = robust_accuracy_at(table["best_norm"], EPS)
    assert at_grid.tolist() == wc.robust.mean(axis=1).tolist()
    # between grid points the minimum-norm distance refines the curve: at 0.16 example 3 is broken
    assert robust_accuracy_at(table["best_norm"], [0.14, 0.16]).tolist() == [0.6, 0.4]


def test_step_curve_breakpoints() -> None:
    eps, acc = security_curve([0.0, 0.2, 0.1, math.inf])
    assert eps.tolist() == [0.0, 0.1, 0.2]
    assert acc.tolist() == [0.75, 0.5, 0.25]  # right-continuous: broken at exactly its norm


def test_summary_median_bootstrap_and_auc() -> None:
    table = min_norm_table(_synthetic())
    s1 = security_summary(table, {"linf": 0.3}, bootstrap=200, seed=3)
    s2 = security_summary(table, {"linf": 0.3}, bootstrap=200, seed=3)
    pd.testing.assert_frame_equal(s1, s2)  # seeded
    row = s1.iloc[0]
    assert row["median_norm"] == 0.15  # sorted best: 0, 0.1, 0.15, 0.2, inf
    assert row["median_low"] <= row["median_norm"] <= row["median_high"]
    # AUC = integral of the step curve over [0, 0.3] / 0.3, checked by dense sampling
    grid = np.linspace(0, 0.3, 300001)
    numeric = float(np.mean(robust_accuracy_at(table["best_norm"], grid)))
    assert row["auc"] == pytest.approx(numeric, abs=1e-4)
    assert (row["n"], row["clean_correct"], row["found"]) == (5, 4, 3)


def test_mostly_unbroken_gives_infinite_median() -> None:
    table = min_norm_table(_synthetic())
    table["best_norm"] = [0.1, math.inf, math.inf, math.inf, 0.0]
    assert math.isinf(security_summary(table, {"linf": 0.3}, bootstrap=50)["median_norm"][0])


def test_write_read_round_trip_and_older_files(tmp_path: Path) -> None:
    table = min_norm_table(_synthetic())
    paths = write_min_norm_table(tmp_path, table)
    assert [p.name for p in paths] == [MIN_NORMS_FILE, MIN_NORMS_CSV]
    pd.testing.assert_frame_equal(read_min_norm_table(tmp_path), table)
    assert write_min_norm_table(tmp_path / "none", table.iloc[0:0]) == []
    assert read_min_norm_table(tmp_path / "none").empty
    # an older per-attack min_norms.parquet has no best_norm: no curves instead of a crash
    pd.DataFrame({"checkpoint": ["m"], "attack": ["cw"], "min_norm": [0.1]}).to_parquet(
        tmp_path / "old.parquet"
    )
    assert read_min_norm_table(tmp_path / "old.parquet").empty


def test_real_attacks_curve_matches_worst_case_and_min_norm_refines() -> None:
    torch.manual_seed(0)
    d = digits()
    x, y = d.x[:60], d.y[:60]
    eps = [0.0, 0.5, 1.0, 1.5]
    cells = []
    for name, params in (
        ("pgd-l2", {"steps": 10}),
        ("cw", {"steps": 20, "binary_search_steps": 3}),
    ):
        attack = get_attack(name, **params)
        out = attack_cell(d.model, attack, x, y, eps, batch_size=60, device=torch.device("cpu"))
        cells.append(CellRecord("m", name, "native", "l2", attack.kind, False, out))
    table = min_norm_table(cells)
    wc = worst_case([c.outcome for c in cells])
    assert robust_accuracy_at(table["best_norm"], eps).tolist() == wc.robust.mean(axis=1).tolist()
    clean = table["clean_correct"].to_numpy()
    assert (table.loc[~clean, "best_norm"] == 0).all()
    assert (table.loc[clean, "best_norm"] > 0).all()
    assert set(table["found_by"]) <= {"pgd-l2", "cw", "", MISCLASSIFIED}
