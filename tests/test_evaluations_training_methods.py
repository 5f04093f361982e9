"""Tests for evaluations.record.training_methods: training columns, matrix, below-budget warning, curves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from evaluations.present.plots_training import plot_training_curves
from evaluations.present.report import write_report
from evaluations.record.metrics import WORST_CASE
from evaluations.record.results import read_results, write_results
from evaluations.record.training_methods import (
    below_budget_warnings,
    checkpoint_training,
    has_training_methods,
    robust_overfitting,
    structure_label,
    training_budgets,
    training_matrix,
)
from tests.test_evaluations_results import synthetic_results


def _mixed(train_eps: float = 0.1) -> pd.DataFrame:
    """Synthetic standard results plus the same models 'adversarially trained' at linf train_eps."""
    std, _ = synthetic_results(with_l2=False)
    std = std.assign(training="standard", train_method="none", train_norm="", train_eps=0.0)
    at, _ = synthetic_results(with_l2=False, seed=1)
    at = at.assign(
        checkpoint="pgd-" + at["checkpoint"],
        training="AT (linf 0.1, PGD-10)",
        train_method="pgd",
        train_norm="linf",
        train_eps=train_eps,
        val_robust_best=0.9,
        val_robust_last=0.85,
        best_robust_ep=7,
    )
    return pd.concat([std, at], ignore_index=True)


def test_checkpoint_training_columns_from_metadata() -> None:
    std = checkpoint_training({})
    assert std["training"] == "standard" and std["train_method"] == "none"
    assert std["train_eps"] == 0.0 and std["best_robust_ep"] == -1
    rec = {"method": "trades", "norm": "linf", "eps": 8 / 255, "steps": 10, "trades_beta": 6.0}
    history = [
        {"epoch": 1, "masks_frozen": False, "val_robust_accuracy": 0.9},  # denser: not eligible
        {"epoch": 2, "masks_frozen": True, "val_robust_accuracy": 0.6},
        {"epoch": 3, "masks_frozen": True, "val_robust_accuracy": 0.7},
        {"epoch": 4, "masks_frozen": True, "val_robust_accuracy": 0.65},
    ]
    cols = checkpoint_training({"adversarial_training": rec, "history": history})
    assert cols["training"] == "TRADES (linf 8/255, PGD-10, beta 6)"
    assert cols["train_method"] == "trades" and cols["train_eps"] == pytest.approx(8 / 255)
    assert cols["best_robust_ep"] == 3 and cols["val_robust_best"] == 0.7
    assert cols["val_robust_last"] == 0.65
    assert (
        structure_label("dense", 0.0) == "dense" and structure_label("window", 0.7) == "window-70"
    )


def test_matrix_cells_are_the_worst_case_rows_at_the_training_budget() -> None:
    df = _mixed()
    assert has_training_methods(df) and not has_training_methods(df[df["train_method"] == "none"])
    assert training_budgets(df) == [("linf", 0.1)]
    matrix = training_matrix(df, "linf", 0.1)
    assert matrix is not None
    assert list(matrix.index) == ["standard", "AT (linf 0.1, PGD-10)"]
    assert list(matrix.columns) == ["dense", "window-70"]
    for ckpt, training, structure in (
        ("window70", "standard", "window-70"),
        ("pgd-dense", "AT (linf 0.1, PGD-10)", "dense"),
    ):
        row = df[(df["checkpoint"] == ckpt) & (df["attack"] == WORST_CASE) & (df["epsilon"] == 0.1)]
        cell = matrix.loc[training, structure]
        assert cell["robust"] == pytest.approx(float(row["robust_accuracy"].iloc[0]))
        assert cell["clean"] == pytest.approx(float(row["clean_accuracy"].iloc[0]))
    # a budget off the grid: clean known, robust not evaluated
    off = training_matrix(df, "linf", 0.15)
    assert off is not None and off.loc["standard", "dense"]["robust"] is None
    assert training_matrix(df, "l2", 0.5) is None


def test_below_budget_warning_only_when_the_grid_stops_short() -> None:
    assert below_budget_warnings(_mixed(0.1)) == []
    warnings = below_budget_warnings(_mixed(0.3))  # grid tops out at 0.2
    assert len(warnings) == 2 and all("evaluated only below it" in w for w in warnings)
    assert any(w.startswith("pgd-dense was trained at linf eps 0.3") for w in warnings)


def test_report_and_figure_show_the_training_methods(tmp_path: Path) -> None:
    df = _mixed(0.3)
    write_results(df, tmp_path)
    back = read_results(tmp_path)
    assert set(back["training"]) == {"standard", "AT (linf 0.1, PGD-10)"}  # columns survive I/O
    paths = plot_training_curves(back, tmp_path / "figures")
    assert sorted(p.name for p in paths) == ["training_curves_linf.png", "training_curves_linf.svg"]
    md_path, html_path = write_report(tmp_path)
    md = md_path.read_text(encoding="utf-8")
    assert "Training method x sparsity" in html_path.read_text(encoding="utf-8")
    assert "Training method x sparsity" in md and "AT (linf 0.1, PGD-10)" in md
    assert "evaluated only below the training budget" in md
    assert "not evaluated" in md  # eps 0.3 is not on the synthetic grid
    assert "robust overfitting" in md
    overfit = robust_overfitting(back)
    assert list(overfit["checkpoint"]) == ["pgd-dense", "pgd-window70"]
    assert overfit["gap"].tolist() == pytest.approx([0.05, 0.05])
    assert (overfit["best_epoch"] == 7).all()
    assert plot_training_curves(df[df["train_method"] == "none"], tmp_path / "f2") == []


def test_gaussian_noise_training_is_l2_without_a_budget() -> None:
    rec = {"method": "gaussian", "norm": "linf", "eps": 0.0, "steps": 0, "sigma": 0.25}
    cols = checkpoint_training({"adversarial_training": rec})
    assert cols["training"] == "Gaussian noise (σ 0.25)" and cols["train_method"] == "gaussian"
    assert cols["train_norm"] == "l2" and cols["train_eps"] == 0.0
    df = _mixed()
    gauss = df[df["train_method"] == "none"].assign(
        checkpoint="g", training=cols["training"], train_method="gaussian", train_norm="l2"
    )
    both = pd.concat([df, gauss], ignore_index=True)
    assert training_budgets(both) == [("linf", 0.1)]  # no (l2, 0) budget from the noise
    assert not any(w.startswith("g ") for w in below_budget_warnings(both))
