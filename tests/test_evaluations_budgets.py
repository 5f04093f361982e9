"""Discriminating budgets and differences to dense (evaluations.record.budgets)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attacks.params import format_epsilon, in_255ths
from evaluations.record.budgets import (
    choose_budgets,
    newcombe_paired,
    newcombe_unpaired,
    relative_to_dense,
    trimmed_max_epsilon,
)
from evaluations.record.metrics import WORST_CASE, summarize_cell
from evaluations.record.results import RESULT_COLUMNS

EPS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3]
# (name, granularity, target, per-eps worst-case accuracy); dense is nearest 50 % at eps 0.1
MODELS = (
    ("dense", "dense", 0.0, [0.98, 0.85, 0.52, 0.08, 0.0, 0.0]),
    ("window-70", "window", 0.7, [0.98, 0.84, 0.50, 0.07, 0.0, 0.0]),
    ("channel-70", "channel", 0.7, [0.97, 0.75, 0.38, 0.04, 0.0, 0.0]),
)
N = 450


def _outcomes(acc: list[float], seed: int) -> np.ndarray:
    """Nested per-example robustness ``(K, N)`` with exactly round(acc * N) robust per budget."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(N)  # examples broken first are at the end of ``order``
    robust = np.zeros((len(acc), N), dtype=bool)
    for k, a in enumerate(acc):
        robust[k, order[: round(a * N)]] = True
    return robust


def _frame(models=MODELS, with_cells: Path | None = None) -> pd.DataFrame:
    rows = []
    for name, gran, target, acc in models:
        robust = _outcomes(acc, 0)  # same order for every model: strongly paired outcomes
        clean = robust[0]
        for row in summarize_cell(EPS, clean, robust, None):
            rows.append(
                {
                    "checkpoint": name,
                    "arch": "small_cnn",
                    "dataset": "digits",
                    "granularity": gran,
                    "sparsity_target": target,
                    "sparsity_achieved": target * 0.95,
                    "attack": WORST_CASE,
                    "backend": "native",
                    "norm": "linf",
                    **row,
                    "seconds": 0.0,
                    "params": "{}",
                }
            )
        if with_cells is not None:
            d = with_cells / "cells" / name
            d.mkdir(parents=True)
            buf = io.BytesIO()
            np.savez(
                buf, epsilons=np.asarray(EPS), clean_correct=clean, robust=robust,
                norms=np.zeros(robust.shape),
            )  # fmt: skip
            (d / "pgd@native.npz").write_bytes(buf.getvalue())
            (d / "pgd@native.json").write_text(json.dumps({"params": {}}))
            rows_pgd = [dict(r, attack="pgd") for r in rows[-len(EPS) :]]
            rows += rows_pgd
    return pd.DataFrame(rows)[RESULT_COLUMNS]


def test_chosen_budgets_on_synthetic_result() -> None:
    choice = choose_budgets(_frame())["linf"]
    assert choice.anchor == 0.1  # dense 52 % is nearest 50 %
    assert choice.epsilons == [0.05, 0.1, 0.15]  # and its grid neighbours
    assert choice.reference == "dense"
    assert math.isclose(choice.reference_accuracy, round(0.52 * N) / N)
    assert "nearest 50 %" in choice.reason and "0.1" in choice.reason


def test_anchor_at_grid_edge_has_one_neighbour() -> None:
    models = tuple((n, g, t, [1.0, 0.45, 0.2, 0.1, 0.05, 0.0]) for n, g, t, _ in MODELS)
    choice = choose_budgets(_frame(models))["linf"]
    assert choice.anchor == 0.05
    assert choice.epsilons == [0.05, 0.1]  # eps = 0 is never a discriminating budget


def test_no_dense_uses_mean_over_checkpoints() -> None:
    choice = choose_budgets(_frame(MODELS[1:]))["linf"]
    assert choice.reference == "mean over checkpoints"
    assert choice.anchor == 0.1


def test_trimmed_max_epsilon_is_first_all_zero_budget() -> None:
    assert trimmed_max_epsilon(_frame()) == 0.2
    nonzero = _frame()
    nonzero.loc[nonzero["epsilon"] == 0.3, "robust_accuracy"] = 0.01
    nonzero.loc[nonzero["epsilon"] == 0.2, "robust_accuracy"] = 0.01
    assert trimmed_max_epsilon(nonzero) == 0.3  # never all zero: the whole grid
    # a floor of 1 %: "at or below 1 % from here on"
    assert trimmed_max_epsilon(nonzero, floor=0.01) == 0.2
    nonzero.loc[nonzero["epsilon"] == 0.3, "robust_accuracy"] = 0.02
    assert trimmed_max_epsilon(nonzero, floor=0.01) == 0.3  # must stay below, not just dip


def test_epsilon_labels() -> None:
    assert in_255ths([0, 2 / 255, 8 / 255])
    assert not in_255ths([0, 0.05, 0.1])
    assert not in_255ths([0, 1.0, 2.0])  # short decimals stay decimals
    assert format_epsilon(8 / 255, grid=[0, 2 / 255, 8 / 255]) == "8/255"
    assert format_epsilon(0.1, grid=[0, 0.05, 0.1]) == "0.1"
    assert format_epsilon(0.0) == "0"


def test_newcombe_intervals_contain_difference_and_pairing_narrows() -> None:
    rng = np.random.default_rng(1)
    base = rng.random(400) < 0.5
    flip = rng.random(400) < 0.1
    other = np.where(flip, ~base, base)  # strongly correlated with ``base``
    d, lo, hi = newcombe_paired(other, base)
    assert lo <= d <= hi and lo >= -1 and hi <= 1
    du, lou, hiu = newcombe_unpaired(int(other.sum()), 400, int(base.sum()), 400)
    assert math.isclose(d, du)
    assert hi - lo < hiu - lou  # positively correlated pairs: the paired interval is narrower
    # identical outcomes: difference 0 and a tiny interval around it (method 10 keeps the
    # Wilson asymmetry, so it is not exactly degenerate)
    d0, lo0, hi0 = newcombe_paired(base, base)
    assert d0 == 0.0 and lo0 <= 0.0 <= hi0 and hi0 - lo0 < 0.005


def test_newcombe_paired_agrees_with_paired_bootstrap() -> None:
    rng = np.random.default_rng(2)
    x = rng.random(450) < 0.5
    y = np.where(rng.random(450) < 0.15, ~x, x)
    _, lo, hi = newcombe_paired(y, x)
    idx = rng.integers(0, 450, size=(4000, 450))
    boot = y[idx].mean(axis=1) - x[idx].mean(axis=1)
    blo, bhi = np.quantile(boot, [0.025, 0.975])
    assert abs(lo - blo) < 0.01 and abs(hi - bhi) < 0.01


def test_newcombe_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        newcombe_paired(np.zeros(3, bool), np.zeros(4, bool))
    with pytest.raises(ValueError):
        newcombe_unpaired(1, 0, 1, 2)


def test_relative_to_dense_paired_from_cells(tmp_path: Path) -> None:
    df = _frame(with_cells=tmp_path)
    budgets = choose_budgets(df)
    rel = relative_to_dense(df, budgets, tmp_path)
    assert set(rel["checkpoint"]) == {"window-70", "channel-70"}
    assert sorted(set(rel["epsilon"])) == [0.05, 0.1, 0.15]
    assert (rel["interval"].str.startswith("paired")).all()
    at = rel[(rel["checkpoint"] == "channel-70") & (rel["epsilon"] == 0.1)].iloc[0]
    assert math.isclose(at["difference"], (round(0.38 * N) - round(0.52 * N)) / N)
    assert at["low"] <= at["difference"] <= at["high"] < 0  # a real loss
    assert bool(at["anchor"])
    # without the cells: the unpaired interval, wider, same difference
    unpaired = relative_to_dense(df, budgets, None)
    u = unpaired[(unpaired["checkpoint"] == "channel-70") & (unpaired["epsilon"] == 0.1)].iloc[0]
    assert u["interval"].startswith("unpaired")
    assert math.isclose(u["difference"], at["difference"])
    assert u["high"] - u["low"] > at["high"] - at["low"]


def test_relative_to_dense_falls_back_when_cells_disagree(tmp_path: Path) -> None:
    df = _frame(with_cells=tmp_path)
    tampered = df.copy()
    mask = (tampered["checkpoint"] == "window-70") & (tampered["attack"] == WORST_CASE)
    tampered.loc[mask, "robust_correct"] = tampered.loc[mask, "robust_correct"] - 1
    rel = relative_to_dense(tampered, choose_budgets(tampered), tmp_path)
    w = rel[rel["checkpoint"] == "window-70"]
    assert (w["interval"].str.startswith("unpaired")).all()


def test_relative_to_dense_without_dense_is_empty() -> None:
    df = _frame(MODELS[1:])
    assert relative_to_dense(df, choose_budgets(df)).empty
