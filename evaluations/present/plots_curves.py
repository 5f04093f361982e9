"""Robustness curves (robust accuracy vs epsilon) and accuracy vs sparsity at chosen budgets."""

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
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from attacks.params import format_epsilon
from evaluations.present.ordering import attack_rank, iter_rows, norm_label, norms_of
from evaluations.present.plot_style import (
    LINESTYLES,
    MARKERS,
    TRIM_FLOOR,
    CheckpointStyle,
    checkpoint_handles,
    checkpoint_styles,
    checkpoint_table,
    describe_results,
    eps_axis,
    granularity_colors,
    granularity_rank,
    is_dense_model,
    legend_outside,
    match_epsilons,
    save_figure,
    seaborn_theme,
)
from evaluations.record.budgets import (
    choose_budgets,
    trimmed_max_epsilon,
)
from evaluations.record.metrics import WORST_CASE

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- figures


def _facets(df: pd.DataFrame) -> list[str]:
    """Granularities to facet robustness curves by; ``[""]`` means one panel with every model.

    Faceting (dense + one granularity per panel, colour = sparsity level) applies when there are
    several granularities *and* several sparsity levels; a single-level comparison (e.g. pruning
    methods at 70 %) is one panel coloured by method.
    """
    table = checkpoint_table(df)
    sparse = [
        (str(g), float(t))
        for g, t in zip(table["granularity"], table["sparsity_target"], strict=True)
        if not is_dense_model(str(g), float(t))
    ]
    kinds = sorted({g for g, _ in sparse}, key=granularity_rank)
    if len(kinds) > 1 and len({t for _, t in sparse}) > 1:
        return kinds
    return [""]


def _draw_curves(
    ax: Any,
    sub: pd.DataFrame,
    shown: pd.DataFrame,
    styles: dict[str, CheckpointStyle],
    multi_backend: bool,
) -> None:
    """One robust-accuracy curve with its Wilson band per (checkpoint, backend) of ``shown``."""
    for (name, backend), curve in shown.groupby(["checkpoint", "backend"], sort=False):
        s = styles[str(name)]
        c = curve.sort_values("epsilon")
        eps = c["epsilon"].to_numpy(float)
        ax.fill_between(
            eps,
            c["robust_accuracy_low"].to_numpy(float),
            c["robust_accuracy_high"].to_numpy(float),
            color=s.color,
            alpha=0.10,
            linewidth=0,
            zorder=s.zorder - 1,
        )
        ax.plot(
            eps,
            c["robust_accuracy"].to_numpy(float),
            color=s.color,
            linestyle=s.linestyle,
            marker=s.marker,
            markersize=7 if s.marker == "*" else 4,
            linewidth=s.linewidth,
            zorder=s.zorder,
            alpha=0.95 if not multi_backend or backend == sub["backend"].iloc[0] else 0.6,
        )


def _panel_title(attack: str, sub: pd.DataFrame, facet: str) -> str:
    """``PGD (native) · window``: the attack (with its backends) and the facet, if any."""
    title = "worst case" if attack == WORST_CASE else attack.upper()
    if attack != WORST_CASE:
        title += f" ({', '.join(sorted({str(b) for b in sub['backend'].unique()}))})"
    return f"{title} · {facet}" if facet else title


def plot_robustness_curves(df: pd.DataFrame, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Robust accuracy vs epsilon with 95 % Wilson bands; one figure per norm.

    One row of panels per attack (worst case last) and, when the results hold several granularities
    at several sparsity levels, one column per granularity: each panel shows the dense baseline
    (thick black) and that granularity's models, colour = sparsity target. Each row's epsilon axis
    stops at the first budget from which every curve of that attack stays at or below 1 % (the
    rest carries no information); on a grid in 1/255 steps the ticks read ``k/255``. Writes
    ``robustness_curves_<norm>.{png,svg}``.
    """
    out = Path(out_dir)
    if df.empty:
        logger.info("no results rows; robustness curves skipped")
        return []
    styles = checkpoint_styles(df)
    facets = _facets(df)
    table = checkpoint_table(df)
    dense_names = {
        str(c)
        for c, g, t in zip(
            table["checkpoint"], table["granularity"], table["sparsity_target"], strict=True
        )
        if is_dense_model(str(g), float(t))
    }
    gran_of = {
        str(c): str(g) for c, g in zip(table["checkpoint"], table["granularity"], strict=True)
    }
    paths: list[Path] = []
    for norm in norms_of(df):
        data = df[df["norm"] == norm]
        grid = sorted({float(e) for e in data["epsilon"].unique()})
        attacks = sorted({str(a) for a in data["attack"].unique()}, key=attack_rank)
        backends_per_attack = data.groupby("attack")["backend"].nunique()
        with seaborn_theme():
            fig, axes = plt.subplots(
                len(attacks),
                len(facets),
                figsize=(3.3 * len(facets) + 2.6, 2.9 * len(attacks) + 0.8),
                sharey=True,
                squeeze=False,
            )
            for i, attack in enumerate(attacks):
                sub = data[data["attack"] == attack]
                right = trimmed_max_epsilon(sub, floor=TRIM_FLOOR)
                multi_backend = int(backends_per_attack.get(attack, 1)) > 1
                for j, facet in enumerate(facets):
                    ax = axes[i][j]
                    keep = [
                        str(c) in dense_names or not facet or gran_of.get(str(c)) == facet
                        for c in sub["checkpoint"]
                    ]
                    _draw_curves(ax, sub, sub[keep], styles, multi_backend)
                    ax.set_title(_panel_title(attack, sub, facet), fontsize=10)
                    eps_axis(ax, grid, norm, right)
                    if i < len(attacks) - 1:
                        ax.set_xlabel("")
                    ax.set_ylim(-0.02, 1.02)
                    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
                axes[i][0].set_ylabel("robust accuracy")
            legend_outside(
                fig, checkpoint_handles(styles, data["checkpoint"].unique()), "checkpoint"
            )
            fig.suptitle(
                f"Robust accuracy vs ε ({norm_label(str(norm))}) — {describe_results(data)}  "
                "(bands: 95% Wilson)",
                fontsize=11,
            )
            fig.tight_layout()
            paths += save_figure(fig, out, f"robustness_curves_{norm}")
    return paths


def _draw_sparsity_panel(
    ax: Any, data: pd.DataFrame, eps: float, granularities: list[str], colors: dict[str, Any]
) -> None:
    """At one epsilon: one error-bar line per granularity and the dense baseline (star + line)."""
    at = data[np.isclose(data["epsilon"].to_numpy(float), eps, rtol=1e-9, atol=0)]
    dense = at[
        [
            is_dense_model(str(g), float(t))
            for g, t in zip(at["granularity"], at["sparsity_target"], strict=True)
        ]
    ]
    for g in granularities:
        pts = at[at["granularity"] == g].sort_values("sparsity_achieved")
        if pts.empty:
            continue
        x = 100.0 * pts["sparsity_achieved"].to_numpy(float)
        y = pts["robust_accuracy"].to_numpy(float)
        yerr = np.vstack(
            [
                y - pts["robust_accuracy_low"].to_numpy(float),
                pts["robust_accuracy_high"].to_numpy(float) - y,
            ]
        )
        ax.errorbar(
            x,
            y,
            yerr=yerr,
            color=colors[g],
            marker=MARKERS.get(g, "v"),
            linestyle=LINESTYLES.get(g, "-"),
            capsize=2,
            linewidth=1.6,
            markersize=5,
            label=g,
        )
    for row in iter_rows(dense):
        ax.axhline(row.robust_accuracy, color="black", linestyle=":", linewidth=1.0)
        ax.plot(
            100.0 * float(row.sparsity_achieved),
            row.robust_accuracy,
            marker="*",
            color="black",
            markersize=11,
            linestyle="none",
            zorder=5,
        )


def _granularity_handles(granularities: list[str], colors: dict[str, Any]) -> list[Line2D]:
    """Legend entries: one per granularity, plus the dense baseline."""
    handles = [
        Line2D(
            [],
            [],
            color=colors[g],
            marker=MARKERS.get(g, "v"),
            linestyle=LINESTYLES.get(g, "-"),
            label=g,
        )
        for g in granularities
    ]
    handles.append(
        Line2D([], [], color="black", marker="*", linestyle=":", markersize=9, label="dense")
    )
    return handles


def plot_accuracy_vs_sparsity(
    df: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    epsilons: Sequence[float] | None = None,
) -> list[Path]:
    """Worst-case robust accuracy vs achieved sparsity, one panel per epsilon, one line per granularity.

    ``epsilons`` default to the discriminating budgets of each norm
    (:func:`evaluations.record.budgets.choose_budgets`: where the dense worst case is nearest 50 %, and its
    grid neighbours). The dense baseline appears as a black star and a dotted reference line. Writes
    ``accuracy_vs_sparsity_<norm>.{png,svg}``.
    """
    out = Path(out_dir)
    wc = df[df["attack"] == WORST_CASE]
    if wc.empty:
        logger.info("no %s rows; accuracy-vs-sparsity figure skipped", WORST_CASE)
        return []
    paths: list[Path] = []
    granularities, colors = granularity_colors(wc)
    budgets = choose_budgets(wc)
    for norm in norms_of(wc):
        data = wc[wc["norm"] == norm]
        grid = sorted({float(e) for e in data["epsilon"].unique()})
        anchor = budgets[norm].anchor if norm in budgets else math.nan
        if epsilons is None:
            chosen = budgets[norm].epsilons if norm in budgets else grid[:1]
        else:
            chosen = match_epsilons(grid, epsilons)
        if not chosen:
            logger.info("no requested epsilon on the %s grid; accuracy-vs-sparsity skipped", norm)
            continue
        with seaborn_theme():
            fig, axes = plt.subplots(
                1, len(chosen), figsize=(3.6 * len(chosen) + 0.8, 3.8), sharey=True, squeeze=False
            )
            for ax, eps in zip(axes[0], chosen, strict=True):
                _draw_sparsity_panel(ax, data, eps, granularities, colors)
                ax.set_title(
                    f"ε = {format_epsilon(eps, grid=grid)}" + (" (anchor)" if eps == anchor else "")
                )
                ax.set_xlabel("achieved sparsity (%)")
                ax.set_xlim(-3, 103)
                ax.set_ylim(-0.02, 1.02)
                ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            axes[0][0].set_ylabel("worst-case robust accuracy")
            handles = _granularity_handles(granularities, colors)
            legend_outside(fig, handles, "granularity")
            fig.suptitle(
                f"Worst-case robust accuracy vs sparsity ({norm_label(str(norm))}) — "
                f"{describe_results(data)}  (bars: 95% Wilson)",
                fontsize=11,
            )
            fig.tight_layout()
            paths += save_figure(fig, out, f"accuracy_vs_sparsity_{norm}")
    return paths
