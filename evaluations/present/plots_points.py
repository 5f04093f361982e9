"""Per-example and per-model scatter figures: C&W minimum-distance ECDFs and clean vs robust accuracy."""

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter
from matplotlib.transforms import Bbox

from attacks.params import format_epsilon
from evaluations.present.ordering import iter_rows, norm_label, norms_of
from evaluations.present.plot_style import (
    MARKERS,
    checkpoint_styles,
    describe_results,
    granularity_colors,
    is_dense_model,
    legend_outside,
    match_epsilons,
    save_figure,
    seaborn_theme,
)
from evaluations.record.budgets import (
    choose_budgets,
)
from evaluations.record.metrics import WORST_CASE

logger = logging.getLogger(__name__)


def plot_cw_ecdf(
    min_norms_df: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    results: pd.DataFrame | None = None,
) -> list[Path]:
    """ECDF of the minimal L2 adversarial distance per checkpoint (minimum-norm attacks, e.g. C&W).

    Only clean-correct examples count; the y axis is the fraction of them with a successful
    adversarial within distance r (the attack success rate at budget r), so a curve plateaus below 1
    when some examples never found an adversarial (``inf``: excluded, and counted in the legend
    where there are any; the title says when there are none).
    ``results`` (optional) supplies dataset/arch and readable checkpoint labels. One panel per
    (attack, backend). Writes ``cw_ecdf.{png,svg}``.
    """
    out = Path(out_dir)
    if min_norms_df is None or min_norms_df.empty:
        logger.info("no minimum-norm distances; C&W ECDF skipped")
        return []
    data = min_norms_df[min_norms_df["clean_correct"].astype(bool)]
    if data.empty:
        logger.info("no clean-correct examples with minimum-norm distances; C&W ECDF skipped")
        return []
    styles = checkpoint_styles(results) if results is not None and not results.empty else {}
    checkpoints = [c for c in styles if c in set(data["checkpoint"])] + sorted(
        {str(c) for c in data["checkpoint"].unique()} - set(styles)
    )
    fallback = dict(zip(checkpoints, sns.color_palette("deep", len(checkpoints)), strict=True))
    panels = sorted(
        {(str(a), str(b)) for a, b in zip(data["attack"], data["backend"], strict=True)}
    )
    with seaborn_theme():
        fig, axes = plt.subplots(
            1, len(panels), figsize=(5.2 * len(panels) + 1.0, 4.0), sharey=True, squeeze=False
        )
        handles: dict[str, Line2D] = {}
        never_total = 0
        for ax, (attack, backend) in zip(axes[0], panels, strict=True):
            sub = data[(data["attack"] == attack) & (data["backend"] == backend)]
            xmax = 0.0
            for name in checkpoints:
                values = sub.loc[sub["checkpoint"] == name, "min_norm"].to_numpy(float)
                if values.size == 0:
                    continue
                finite = values[np.isfinite(values)]
                never = int(values.size - finite.size)
                s = styles.get(name)
                color = s.color if s else fallback[name]
                label = s.label if s else name
                if never:  # only where it says something: "0/443" on every line is noise
                    label += f" — never found {never}/{values.size}"
                never_total += never
                if finite.size:
                    xmax = max(xmax, float(finite.max()))
                    sns.ecdfplot(
                        x=finite,
                        weights=np.full(finite.size, 1.0 / values.size),
                        stat="count",  # cumulative weight = fraction of all clean-correct examples
                        ax=ax,
                        color=color,
                        linestyle=s.linestyle if s else "-",
                        linewidth=s.linewidth if s else 1.6,
                        label=label,
                    )
                handles[f"{label} ({attack}/{backend})" if len(panels) > 1 else label] = Line2D(
                    [],
                    [],
                    color=color,
                    linestyle=s.linestyle if s else "-",
                    linewidth=s.linewidth if s else 1.6,
                    label=f"{label} ({attack}/{backend})" if len(panels) > 1 else label,
                )
            old_legend = ax.get_legend()
            if old_legend is not None:
                old_legend.remove()
            ax.set_title(f"{attack.upper()} ({backend})")
            ax.set_xlabel("minimal adversarial distance ‖δ‖₂ (L2)")
            ax.set_xlim(0, xmax * 1.05 if xmax > 0 else 1.0)
            ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel("")
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        axes[0][0].set_ylabel("clean-correct examples broken within r")
        legend_outside(fig, list(handles.values()), "checkpoint")
        n_clean = sorted({int(v) for v in data.groupby("checkpoint").size()})
        desc = describe_results(results) if results is not None and not results.empty else ""
        title = "Minimum-norm (C&W) L2 distance ECDF"
        title += f" — {desc}" if desc else ""
        title += f" (clean-correct: {n_clean[0]}" + (
            f"–{n_clean[-1]})" if len(n_clean) > 1 else ")"
        )
        if never_total == 0:
            title += "\nan adversarial was found for every clean-correct example"
        fig.suptitle(title, fontsize=11)
        fig.tight_layout()
        return save_figure(fig, out, "cw_ecdf")


def _zoom_axes(ax: Any, at: pd.DataFrame, lo_clean: float) -> None:
    """Axes zoomed on the points, percent ticks at 1/2/5 steps."""
    # Zoomed on the points (the question is how they differ), never past 100 %.
    margin = max(0.01, 0.25 * (1.0 - lo_clean))
    ax.set_xlim(max(0.0, lo_clean - margin), 1.0)
    lo_r, hi_r = float(at["robust_accuracy"].min()), float(at["robust_accuracy"].max())
    pad = max(0.05, 0.2 * (hi_r - lo_r))
    ax.set_ylim(max(-0.02, lo_r - pad), min(1.02, hi_r + pad))
    for coll in ax.collections:
        coll.set_clip_on(False)  # a point at 100 % clean accuracy stays whole
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        # at most 5 ticks at 1/2/5 steps; ticks 0.5 % apart need a decimal, or two read "98%"
        axis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 5, 10]))
        axis.set_major_formatter(PercentFormatter(1.0, decimals=1 if hi - lo < 0.08 else 0))


def _legend_right(ax: Any) -> None:
    """Move seaborn's legend outside the axes, with the size entries named as sparsity targets."""
    handles, labels = ax.get_legend_handles_labels()
    old_legend = ax.get_legend()
    if old_legend is not None:
        old_legend.remove()
    ax.legend(
        handles,
        [lab.replace("sparsity", "sparsity target (%)") for lab in labels],
        loc="center left",
        bbox_to_anchor=(1.02, 0.5),
        frameon=False,
    )


def plot_clean_vs_robust(
    df: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    epsilon: float | None = None,
) -> list[Path]:
    """Scatter of clean vs worst-case robust accuracy at one epsilon per norm.

    ``epsilon`` defaults to each norm's anchor budget (:func:`evaluations.record.budgets.choose_budgets`:
    where the dense worst case is nearest 50 %). Hue = granularity, marker size and label = sparsity
    target; the dense baseline is a black star. Point labels are placed so they do not overlap (see
    :func:`layout_problems`). Writes ``clean_vs_robust_<norm>.{png,svg}``.
    """
    out = Path(out_dir)
    wc = df[df["attack"] == WORST_CASE]
    if wc.empty:
        logger.info("no %s rows; clean-vs-robust figure skipped", WORST_CASE)
        return []
    paths: list[Path] = []
    granularities, palette = granularity_colors(wc)
    budgets = choose_budgets(wc)
    for norm in norms_of(wc):
        data = wc[wc["norm"] == norm]
        grid = sorted({float(e) for e in data["epsilon"].unique()})
        if epsilon is None:
            eps = budgets[norm].anchor if norm in budgets else grid[0]
        else:
            matched = match_epsilons(grid, [epsilon])
            if not matched:
                logger.info("epsilon %g not on the %s grid; clean-vs-robust skipped", epsilon, norm)
                continue
            eps = matched[0]
        at = data[np.isclose(data["epsilon"].to_numpy(float), eps, rtol=1e-9, atol=0)].copy()
        at["_dense"] = [
            is_dense_model(str(g), float(t))
            for g, t in zip(at["granularity"], at["sparsity_target"], strict=True)
        ]
        sparse, dense = at[~at["_dense"]], at[at["_dense"]]
        with seaborn_theme():
            fig, ax = plt.subplots(figsize=(6.4, 4.8))
            lo_clean = float(at["clean_accuracy"].min())
            ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, zorder=1)
            if not sparse.empty:
                sns.scatterplot(
                    data=sparse.assign(sparsity=100.0 * sparse["sparsity_target"]),
                    x="clean_accuracy",
                    y="robust_accuracy",
                    hue="granularity",
                    hue_order=[g for g in granularities if g in set(sparse["granularity"])],
                    palette=palette,
                    size="sparsity",
                    sizes=(40, 220),
                    style="granularity",
                    markers={g: MARKERS.get(g, "v") for g in granularities},
                    alpha=0.9,
                    edgecolor="white",
                    ax=ax,
                    zorder=3,
                )
                point_labels = [
                    (
                        float(row.clean_accuracy),
                        float(row.robust_accuracy),
                        f"{str(row.granularity)[:2]}{100 * float(row.sparsity_target):.0f}",
                    )
                    for row in iter_rows(sparse)
                ]
            if not dense.empty:
                ax.scatter(
                    dense["clean_accuracy"],
                    dense["robust_accuracy"],
                    marker="*",
                    s=260,
                    color="black",
                    label="dense",
                    zorder=4,
                )
            _zoom_axes(ax, at, lo_clean)
            ax.set_xlabel("clean accuracy")
            ax.set_ylabel("worst-case robust accuracy")
            _legend_right(ax)
            ax.set_title(
                f"Clean vs robust accuracy ({norm_label(str(norm))}, "
                f"ε = {format_epsilon(eps, grid=grid)})\n{describe_results(data)}",
                fontsize=11,
            )
            fig.tight_layout()
            if not sparse.empty:  # placed last: layout changes move points on the canvas
                _place_labels(ax, point_labels)
            paths += save_figure(fig, out, f"clean_vs_robust_{norm}")
    return paths


def _place_labels(ax: Any, points: Sequence[tuple[float, float, str]]) -> None:
    """Annotate ``(x, y, text)`` points so no two labels overlap (up to 8 labels on one point).

    Call after the layout is final. Greedy over 8 offsets: labels are placed in order of x; each
    takes the first offset whose box overlaps no label placed so far and no other point; when
    none is free it keeps the least-overlapping one.
    """
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    # rows 13 pt apart: a 7 pt label's box (descent included) is about 11 pt tall
    offsets = [(9, 2), (9, -13), (-9, 2), (-9, -13), (9, 15), (-9, 15), (9, -26), (-9, -26)]
    placed: list[Any] = []
    r = 9.0 * fig.dpi / 72.0  # a marker's reach in pixels (the largest markers are ~15 pt wide)
    pts = [
        Bbox.from_extents(px - r, py - r, px + r, py + r)
        for px, py in (ax.transData.transform([(x, y) for x, y, _ in points]) if points else [])
    ]
    for x, y, text in sorted(points, key=lambda p: (p[0], p[1])):
        best, best_score = None, math.inf
        for dx, dy in offsets:
            ann = ax.annotate(
                text,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=7,
                ha="left" if dx >= 0 else "right",
            )
            box = ann.get_window_extent(renderer)
            # covering a marker is bad, covering another label is worse
            score = 100 * sum(box.overlaps(b) for b in placed) + sum(box.overlaps(p) for p in pts)
            if score < best_score:
                if best is not None:
                    best.remove()
                best, best_score = ann, score
            else:
                ann.remove()
            if score == 0:
                break
        if best is not None:
            placed.append(best.get_window_extent(renderer))
