"""Robustness against modelled hardware cost: what each sparsity pattern buys, what it costs.

One figure per norm, ``robustness_vs_cost_<norm>.{png,svg}``: rows = worst-case robust accuracy
at the anchor budget and the robustness AUC; columns = the cost axes of
:data:`evaluations.record.costs.COST_AXES` (modelled MAC speed-up with zero weights skipped, with
the model thinned, and the weight bytes of values + position codes). Every checkpoint is a point
(colour and marker = granularity, marker size = sparsity target, the dense model a black star); the
dashed line is the Pareto front (no other checkpoint of the same training is both more robust and
cheaper). With several training methods (standard, PGD-AT, ...) each gets its own pair of rows:
their fronts are separate, as in :func:`evaluations.record.costs.robustness_vs_cost`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from attacks.params import format_epsilon
from evaluations.present.ordering import norm_label
from evaluations.present.plot_style import (
    MARKERS,
    describe_results,
    granularity_colors,
    is_dense_model,
    legend_outside,
    save_figure,
    seaborn_theme,
)
from evaluations.record.costs import COST_AXES, robustness_vs_cost

__all__ = ["plot_robustness_vs_cost"]

logger = logging.getLogger(__name__)

_ROWS = (("robust_accuracy", "acc", "worst-case robust accuracy\nat the anchor ε"),
         ("auc", "auc", "robustness AUC\n(mean over the ε grid)"))  # fmt: skip


#: panel titles (the cost axes are modelled)
_TITLES = {
    "speedup_effective": "MAC speed-up, zero weights skipped\n(modelled)",
    "speedup_compact": "MAC speed-up, thinned model\n(modelled)",
    "weight_bytes_sparse": "weight bytes: values + position codes\n(modelled)",
}


def _target_sizes(targets: pd.Series) -> dict[float, float]:
    """Marker area per sparsity target: the higher the target, the bigger (40 .. 160)."""
    levels = sorted({round(float(t), 6) for t in targets if float(t) > 0})
    if len(levels) <= 1:
        return {lv: 70.0 for lv in levels}
    return {lv: 40.0 + 120.0 * i / (len(levels) - 1) for i, lv in enumerate(levels)}


def _panel(
    ax: Any,
    pts: pd.DataFrame,
    x: str,
    y: str,
    flag: str,
    style: tuple[dict[str, Any], dict[float, float]],
) -> None:
    colors, sizes = style
    lower_better = COST_AXES[x][1]
    xs = pts[x].to_numpy(float) / (1024.0 if x.startswith("weight_bytes") else 1.0)
    for (gran, target), xv, yv in zip(
        zip(pts["granularity"], pts["sparsity_target"], strict=True), xs, pts[y], strict=True
    ):
        if is_dense_model(str(gran), float(target)):
            ax.scatter([xv], [yv], marker="*", s=220, color="black", zorder=4)
            continue
        ax.scatter(
            [xv], [yv], marker=MARKERS.get(str(gran), "v"), zorder=3,
            s=sizes.get(round(float(target), 6), 70.0),
            color=colors.get(str(gran), "grey"), edgecolor="white", alpha=0.9,
        )  # fmt: skip
    front = pts[flag].astype(bool).to_numpy()
    if front.sum() > 1:
        order = np.argsort(xs[front])
        fx, fy = xs[front][order], pts[y].to_numpy(float)[front][order]
        ax.step(fx, fy, where="post" if lower_better else "pre", color="grey",
                linestyle="--", linewidth=1.2, zorder=2)  # fmt: skip
    lo, hi = float(pts[y].min()), float(pts[y].max())
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1 if hi - lo < 0.08 else 0))


def _legend(pts: pd.DataFrame, granularities: list[str], style: Any) -> list[Line2D]:
    colors, sizes = style
    handles = [Line2D([], [], marker="*", color="black", linestyle="", markersize=10,
                      label="dense")]  # fmt: skip
    handles += [
        Line2D([], [], marker=MARKERS.get(g, "v"), color=colors[g], linestyle="",
               markersize=7, label=g)
        for g in granularities if g in set(pts["granularity"])
    ]  # fmt: skip
    handles += [
        Line2D([], [], marker="o", color="grey", linestyle="", markersize=float(np.sqrt(area)),
               label=f"target {100 * level:.0f} %")
        for level, area in sizes.items()
    ]  # fmt: skip
    handles.append(Line2D([], [], color="grey", linestyle="--", label="Pareto front"))
    return handles


def plot_robustness_vs_cost(
    df: pd.DataFrame, costs: pd.DataFrame, out_dir: str | os.PathLike[str]
) -> list[Path]:
    """Draw ``robustness_vs_cost_<norm>`` for each norm with worst-case results and costs.

    ``df``: a results table; ``costs``: :func:`evaluations.record.costs.read_costs`. Skipped
    (INFO) without costs (a results directory written before them) or worst-case rows.
    """
    points = robustness_vs_cost(df, costs)
    if points.empty:
        logger.info("no cost model or worst-case results; robustness-vs-cost figure skipped")
        return []
    out = Path(out_dir)
    granularities, colors = granularity_colors(points)
    paths: list[Path] = []
    for norm, pts in points.groupby("norm", sort=True):
        style = (colors, _target_sizes(pts["sparsity_target"]))
        trainings = list(dict.fromkeys(pts["training"]))
        rows = [(t, spec) for t in trainings for spec in _ROWS]
        with seaborn_theme():
            fig, axes = plt.subplots(len(rows), len(COST_AXES),
                                     figsize=(4.2 * len(COST_AXES), 3.3 * len(rows)),
                                     squeeze=False, sharey="row")  # fmt: skip
            for col, (x, (label, lower_better)) in enumerate(COST_AXES.items()):
                for row, (training, (y, short, ylabel)) in enumerate(rows):
                    ax = axes[row][col]
                    sel = pts[pts["training"] == training]
                    _panel(ax, sel, x, y, f"pareto_{x}_{short}", style)
                    if row == 0:
                        ax.set_title(_TITLES.get(x, label), fontsize=9)
                    if row == len(rows) - 1:
                        unit = "KiB" if x.startswith("weight_bytes") else "speed-up (×)"
                        ax.set_xlabel(unit + ("  ← better" if lower_better else "  → better"))
                    if col == 0:
                        prefix = f"{training}\n" if len(trainings) > 1 else ""
                        ax.set_ylabel(prefix + ylabel, fontsize=9)
            legend_outside(fig, _legend(pts, granularities, style), "granularity, target")
            eps = float(pts["epsilon"].iloc[0])
            grid = sorted({float(e) for e in df.loc[df["norm"] == norm, "epsilon"]})
            fig.suptitle(
                f"What each pattern buys, what it costs ({norm_label(str(norm))}, anchor "
                f"ε = {format_epsilon(eps, grid=grid)}) — {describe_results(df)}\n"
                "cost axes are MODELLED (exact MAC counts, illustrative accelerator), not measured",
                fontsize=10,
            )
            fig.tight_layout()
            paths += save_figure(fig, out, f"robustness_vs_cost_{norm}")
    return paths
