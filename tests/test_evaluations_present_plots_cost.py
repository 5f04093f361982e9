"""evaluations.present.plots_cost: one robustness-vs-cost figure per norm, skipped without costs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from evaluations.present.plots_cost import plot_robustness_vs_cost
from evaluations.record.costs import COST_COLUMNS
from tests.test_evaluations_record_costs import costs_frame, results_frame


def test_figure_per_norm_and_skip_without_costs(tmp_path: Path) -> None:
    paths = plot_robustness_vs_cost(results_frame(), costs_frame(), tmp_path)
    assert sorted(p.name for p in paths) == [
        "robustness_vs_cost_linf.png",
        "robustness_vs_cost_linf.svg",
    ]
    assert all(p.stat().st_size > 1000 for p in paths)
    svg = (tmp_path / "robustness_vs_cost_linf.svg").read_text(encoding="utf-8")
    assert "MODELLED" in svg and "Pareto front" in svg
    empty = pd.DataFrame(columns=COST_COLUMNS)
    assert plot_robustness_vs_cost(results_frame(), empty, tmp_path / "none") == []
    assert not (tmp_path / "none").exists()
