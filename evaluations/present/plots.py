"""Figures of a results directory: robustness curves, accuracy vs sparsity, C&W distance ECDFs, clean vs robust.

Every function writes one PNG and one SVG per figure (atomically) and returns the written paths; a
figure whose data is absent is skipped with an INFO log line. File names (``<norm>`` is ``linf`` or
``l2``):

* ``robustness_curves_<norm>.{png,svg}`` robust accuracy vs epsilon, one panel per attack
* ``accuracy_vs_sparsity_<norm>.{png,svg}`` worst-case robust accuracy vs achieved sparsity
* ``cw_ecdf.{png,svg}`` ECDF of minimum-norm (C&W) L2 distances per checkpoint
* ``clean_vs_robust_<norm>.{png,svg}`` clean vs worst-case robust accuracy at one epsilon

:func:`plot_all` draws them all from a results directory into ``<results_dir>/figures``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter
from matplotlib.transforms import Bbox

from evaluations.record.budgets import (
    choose_budgets,
    epsilon_label,
    in_255ths,
    trimmed_max_epsilon,
)
from evaluations.record.metrics import WORST_CASE
from evaluations.record.results import read_min_norms, read_results
from robustbench_sparse.atomic import atomic_path

__all__ = [
    "FIGURES_DIR",
    "layout_problems",
    "plot_accuracy_vs_sparsity",
    "plot_all",
    "plot_clean_vs_robust",
    "plot_cw_ecdf",
    "plot_robustness_curves",
    "thin_tick_labels",
]

logger = logging.getLogger(__name__)

FIGURES_DIR = "figures"
DENSE = "dense"

_NORM_LABEL = {"linf": "L∞", "l2": "L2"}
# Campfire granularities, then the other pruning methods' labels (see SparsityConfig.label).
_GRANULARITY_ORDER = (
    "dense",
    "window",
    "channel",
    "combined",
    "unstructured",
    "gmp",
    "random-uniform",
    "random-erk",
    "grasp",
    "filter",
)
_LINESTYLES: dict[str, Any] = {
    "window": "-",
    "channel": "--",
    "combined": "-.",
    "unstructured": ":",
    "gmp": (0, (1, 1)),
    "random-uniform": (0, (5, 1)),
    "random-erk": (0, (5, 1)),
    "grasp": (0, (3, 1, 1, 1, 1, 1)),
    "filter": (0, (8, 2, 2, 2)),
}
_MARKERS = {
    "dense": "*",
    "window": "o",
    "channel": "s",
    "combined": "^",
    "unstructured": "D",
    "gmp": "d",
    "random-uniform": "x",
    "random-erk": "X",
    "grasp": "P",
    "filter": "h",
}
_ATTACK_ORDER = ("fgsm", "fgm", "pgd", "apgd", "cw", WORST_CASE)
_DPI = 150
_TRIM_FLOOR = 0.01  # curve axes stop once every model stays at or below 1 %


def _rows(frame: pd.DataFrame) -> Iterator[Any]:
    """Rows as namedtuples, typed loosely (pandas types cell values as a broad scalar union)."""
    return iter(frame.itertuples(index=False))


# --------------------------------------------------------------------------- styling helpers


@dataclass(frozen=True)
class _Style:
    """How one checkpoint is drawn."""

    label: str
    color: Any
    linestyle: Any  # a matplotlib line style
    marker: str
    linewidth: float
    zorder: int


def _norm_label(norm: str) -> str:
    return _NORM_LABEL.get(norm, norm)


def _norms(df: pd.DataFrame) -> list[str]:
    """Norms present, L∞ first."""
    order = list(_NORM_LABEL)
    return sorted(
        {str(n) for n in df["norm"].unique()},
        key=lambda n: (order.index(n) if n in order else len(order), n),
    )


def _pct(value: float) -> str:
    return f"{100.0 * value:.0f}%" if math.isfinite(value) else "?"


def _granularity_rank(g: str) -> int:
    return _GRANULARITY_ORDER.index(g) if g in _GRANULARITY_ORDER else len(_GRANULARITY_ORDER)


def _attack_rank(a: str) -> tuple[int, str]:
    return (_ATTACK_ORDER.index(a) if a in _ATTACK_ORDER else len(_ATTACK_ORDER) - 1, a)


def _is_dense(granularity: str, target: float) -> bool:
    return granularity == DENSE or target == 0.0


def _checkpoint_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per checkpoint (granularity, sparsity target/achieved, clean accuracy), sorted."""
    table = (
        df.groupby("checkpoint", sort=False)
        .agg(
            granularity=("granularity", "first"),
            sparsity_target=("sparsity_target", "first"),
            sparsity_achieved=("sparsity_achieved", "first"),
            clean_accuracy=("clean_accuracy", "first"),
        )
        .reset_index()
    )
    table["_dense"] = [
        not _is_dense(g, t)
        for g, t in zip(table["granularity"], table["sparsity_target"], strict=True)
    ]
    table["_rank"] = table["granularity"].map(_granularity_rank)
    return table.sort_values(["_dense", "_rank", "sparsity_target", "checkpoint"]).drop(
        columns=["_dense", "_rank"]
    )


def _sparsity_palette(targets: Iterable[float]) -> dict[float, Any]:
    levels = sorted({float(t) for t in targets if float(t) > 0.0})
    # Distinct hues (no black/grey: dense is black), in a fixed order: blue, orange, red, purple,
    # green, brown, pink, olive, cyan. Neighbouring sparsities never share a near-identical colour.
    tab = sns.color_palette("tab10", 10)
    order = [0, 1, 3, 4, 2, 5, 6, 8, 9]
    colors = [tab[order[i % len(order)]] for i in range(len(levels))]
    return {lvl: colors[i] for i, lvl in enumerate(levels)}


def _checkpoint_styles(df: pd.DataFrame) -> dict[str, _Style]:
    """Color = sparsity level, line style / marker = granularity; the dense baseline black and thick."""
    table = _checkpoint_table(df)
    palette = _sparsity_palette(table["sparsity_target"])
    # One sparsity level (e.g. a pruning-methods comparison at 70 %): color by granularity instead.
    sparse = [
        (str(g), float(t))
        for g, t in zip(table["granularity"], table["sparsity_target"], strict=True)
        if not _is_dense(str(g), float(t))
    ]
    kinds = sorted({g for g, _ in sparse}, key=_granularity_rank)
    by_kind = len({t for _, t in sparse}) == 1 and len(kinds) > 1
    kind_colors = dict(zip(kinds, sns.color_palette("tab10", len(kinds)), strict=True))
    labels: dict[str, str] = {}
    for row in _rows(table):
        g, t = str(row.granularity), float(row.sparsity_target)
        labels[str(row.checkpoint)] = (
            "dense"
            if _is_dense(g, t)
            else f"{g} {_pct(t)} (achieved {_pct(row.sparsity_achieved)})"
        )
    duplicated = {lab for lab in labels.values() if list(labels.values()).count(lab) > 1}
    styles: dict[str, _Style] = {}
    for row in _rows(table):
        name, g, t = str(row.checkpoint), str(row.granularity), float(row.sparsity_target)
        label = labels[name] + (f" [{name}]" if labels[name] in duplicated else "")
        if _is_dense(g, t):
            styles[name] = _Style(label, "black", "-", _MARKERS["dense"], 2.8, 5)
        else:
            styles[name] = _Style(
                label,
                kind_colors[g] if by_kind else palette[t],
                _LINESTYLES.get(g, "-"),
                _MARKERS.get(g, "v"),
                1.6,
                3,
            )
    return styles


def _describe(df: pd.DataFrame) -> str:
    """``dataset · arch · n=…`` for titles."""

    def join(col: str) -> str:
        return ", ".join(sorted({str(v) for v in df[col].unique()}))

    ns = sorted({int(v) for v in df["n"].unique()})
    n = str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    return f"{join('dataset')} · {join('arch')} · n={n}"


def _save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Save ``fig`` as PNG and SVG atomically, close it, and return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    thin_tick_labels(fig)
    for problem in layout_problems(fig):
        logger.warning("figure %s: %s", stem, problem)
    try:
        for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None})):
            path = out_dir / f"{stem}.{ext}"
            with atomic_path(path) as tmp:
                fig.savefig(
                    tmp, format=ext, dpi=_DPI, bbox_inches="tight", metadata=meta, facecolor="white"
                )
            paths.append(path)
    finally:
        plt.close(fig)
    logger.info("wrote figure %s.{png,svg} in %s", stem, out_dir)
    return paths


def thin_tick_labels(fig: Figure) -> int:
    """Blank the tick labels that would overlap a neighbour's; returns how many were blanked.

    Call once the layout is final (after ``tight_layout``). Along each axis, left to right (bottom to
    top), a label that overlaps the last one kept is blanked; the last label of the axis is kept in
    preference to its neighbour (so the axis end stays labelled), the first always. The ticks stay;
    only their text goes. Geometric epsilon grids such as CIFAR's ``0, 1, 2, 4, 8, 16 /255`` on a
    linear axis crowd their first labels otherwise.
    """
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    blanked = 0
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            locs = list(axis.get_majorticklocs())
            texts = list(axis.get_majorticklabels())
            if len(texts) != len(locs) or len(locs) < 3:
                continue
            lo, hi = sorted(axis.get_view_interval())
            shown = [
                i
                for i, (loc, t) in enumerate(zip(locs, texts, strict=True))
                if t.get_visible() and t.get_text() and lo - 1e-12 <= loc <= hi + 1e-12
            ]
            boxes = {i: texts[i].get_window_extent(renderer) for i in shown}
            kept: list[int] = []
            for i in shown:
                if not kept or not boxes[kept[-1]].overlaps(boxes[i]):
                    kept.append(i)
                elif i == shown[-1] and len(kept) > 1:
                    kept[-1] = i  # keep the axis end labelled
            if len(kept) == len(shown):
                continue
            labels = [t.get_text() for t in texts]
            for i in shown:
                if i not in kept:
                    labels[i] = ""
                    blanked += 1
            axis.set_ticks(locs, labels=labels)
    return blanked


def layout_problems(fig: Figure) -> list[str]:
    """Readability problems matplotlib can detect: overlapping annotations or tick labels, and axis
    labels longer than their axes. One sentence per problem; empty when the layout is clean."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    problems: list[str] = []
    for ax in fig.axes:
        texts = [t for t in ax.texts if t.get_visible() and t.get_text()]
        boxes = [t.get_window_extent(renderer) for t in texts]
        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                if boxes[i].overlaps(boxes[j]):
                    problems.append(
                        f"labels overlap: {texts[i].get_text()!r} and {texts[j].get_text()!r}"
                    )
        for axis_name, labels in (("x", ax.get_xticklabels()), ("y", ax.get_yticklabels())):
            shown = [t for t in labels if t.get_visible() and t.get_text()]
            tick_boxes = [t.get_window_extent(renderer) for t in shown]
            for a, b, ta, tb in zip(tick_boxes, tick_boxes[1:], shown, shown[1:], strict=False):
                if a.overlaps(b):
                    problems.append(
                        f"{axis_name} tick labels overlap: {ta.get_text()!r}, {tb.get_text()!r}"
                    )
        frame = ax.get_window_extent(renderer)
        ylabel = ax.yaxis.label
        if ylabel.get_text() and ylabel.get_window_extent(renderer).height > 1.5 * frame.height:
            problems.append(f"y label {ylabel.get_text()!r} is longer than its axes")
    return problems


def _eps_axis_label(norm: str) -> str:
    """The epsilon axis label, with its unit (pixel values are in [0, 1])."""
    if norm == "linf":
        return "ε (L∞, pixel scale 0–1)"
    if norm == "l2":
        return "ε (L2 over the image, pixel scale 0–1)"
    return f"ε ({norm})"


def _eps_axis(ax: Any, grid: Sequence[float], norm: str, right: float) -> None:
    """Label an epsilon axis: unit, ``k/255`` ticks on a 1/255 grid, cut at ``right``."""
    ax.set_xlim(-0.02 * right, 1.03 * right if right > 0 else 1.0)
    if in_255ths(grid):
        ticks = _spread([e for e in grid if e <= right * (1 + 1e-9)], 6)
        ax.set_xticks(ticks)
        ax.set_xticklabels([epsilon_label(e, grid) for e in ticks])
    ax.set_xlabel(_eps_axis_label(norm))


def _theme() -> Any:
    """Seaborn theme as a context manager (no global style changes)."""
    return plt.rc_context(
        {
            **sns.axes_style("whitegrid"),
            **sns.plotting_context("notebook", font_scale=0.9),
            "svg.hashsalt": "robustbench-sparse",
            "axes.titleweight": "bold",
        }
    )


def _spread(values: Sequence[float], k: int) -> list[float]:
    """``k`` values spread evenly over the sorted ``values`` (first, last and in between)."""
    if len(values) <= k:
        return list(values)
    idx = sorted({round(i) for i in np.linspace(0, len(values) - 1, k)})
    return [values[i] for i in idx]


def _match_epsilons(available: Sequence[float], wanted: Iterable[float]) -> list[float]:
    """Grid values matching ``wanted`` (relative tolerance); unknown ones are logged and dropped."""
    out: list[float] = []
    for eps in wanted:
        hits = [a for a in available if math.isclose(a, float(eps), rel_tol=1e-6, abs_tol=1e-12)]
        if hits:
            out.append(hits[0])
        else:
            logger.warning("epsilon %g is not on the grid %s; skipped", eps, list(available))
    return sorted(set(out))


def _legend_outside(fig: Figure, handles: list[Any], title: str | None = None) -> None:
    fig.legend(
        handles=handles,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        frameon=False,
        title=title,
    )


def _checkpoint_handles(styles: dict[str, _Style], names: Iterable[str]) -> list[Line2D]:
    present = set(names)
    return [
        Line2D(
            [],
            [],
            color=s.color,
            linestyle=s.linestyle,
            marker=s.marker,
            linewidth=s.linewidth,
            markersize=7 if s.marker == "*" else 5,
            label=s.label,
        )
        for name, s in styles.items()
        if name in present
    ]


# --------------------------------------------------------------------------- figures


def _facets(df: pd.DataFrame) -> list[str]:
    """Granularities to facet robustness curves by; ``[""]`` means one panel with every model.

    Faceting (dense + one granularity per panel, colour = sparsity level) applies when there are
    several granularities *and* several sparsity levels; a single-level comparison (e.g. pruning
    methods at 70 %) is one panel coloured by method.
    """
    table = _checkpoint_table(df)
    sparse = [
        (str(g), float(t))
        for g, t in zip(table["granularity"], table["sparsity_target"], strict=True)
        if not _is_dense(str(g), float(t))
    ]
    kinds = sorted({g for g, _ in sparse}, key=_granularity_rank)
    if len(kinds) > 1 and len({t for _, t in sparse}) > 1:
        return kinds
    return [""]


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
    styles = _checkpoint_styles(df)
    facets = _facets(df)
    table = _checkpoint_table(df)
    dense_names = {
        str(c)
        for c, g, t in zip(
            table["checkpoint"], table["granularity"], table["sparsity_target"], strict=True
        )
        if _is_dense(str(g), float(t))
    }
    gran_of = {
        str(c): str(g) for c, g in zip(table["checkpoint"], table["granularity"], strict=True)
    }
    paths: list[Path] = []
    for norm in _norms(df):
        data = df[df["norm"] == norm]
        grid = sorted({float(e) for e in data["epsilon"].unique()})
        attacks = sorted({str(a) for a in data["attack"].unique()}, key=_attack_rank)
        backends_per_attack = data.groupby("attack")["backend"].nunique()
        with _theme():
            fig, axes = plt.subplots(
                len(attacks),
                len(facets),
                figsize=(3.3 * len(facets) + 2.6, 2.9 * len(attacks) + 0.8),
                sharey=True,
                squeeze=False,
            )
            for i, attack in enumerate(attacks):
                sub = data[data["attack"] == attack]
                right = trimmed_max_epsilon(sub, floor=_TRIM_FLOOR)
                multi_backend = int(backends_per_attack.get(attack, 1)) > 1
                for j, facet in enumerate(facets):
                    ax = axes[i][j]
                    keep = [
                        str(c) in dense_names or not facet or gran_of.get(str(c)) == facet
                        for c in sub["checkpoint"]
                    ]
                    for (name, backend), curve in sub[keep].groupby(
                        ["checkpoint", "backend"], sort=False
                    ):
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
                            alpha=0.95
                            if not multi_backend or backend == sub["backend"].iloc[0]
                            else 0.6,
                        )
                    title = "worst case" if attack == WORST_CASE else attack.upper()
                    if attack != WORST_CASE:
                        title += (
                            f" ({', '.join(sorted({str(b) for b in sub['backend'].unique()}))})"
                        )
                    ax.set_title(f"{title} · {facet}" if facet else title, fontsize=10)
                    _eps_axis(ax, grid, norm, right)
                    if i < len(attacks) - 1:
                        ax.set_xlabel("")
                    ax.set_ylim(-0.02, 1.02)
                    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
                axes[i][0].set_ylabel("robust accuracy")
            _legend_outside(
                fig, _checkpoint_handles(styles, data["checkpoint"].unique()), "checkpoint"
            )
            fig.suptitle(
                f"Robust accuracy vs ε ({_norm_label(str(norm))}) — {_describe(data)}  "
                "(bands: 95% Wilson)",
                fontsize=11,
            )
            fig.tight_layout()
            paths += _save(fig, out, f"robustness_curves_{norm}")
    return paths


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
    granularities = sorted(
        {str(g) for g in wc["granularity"].unique() if g != DENSE}, key=_granularity_rank
    )
    colors = dict(zip(granularities, sns.color_palette("deep", len(granularities)), strict=True))
    budgets = choose_budgets(wc)
    for norm in _norms(wc):
        data = wc[wc["norm"] == norm]
        grid = sorted({float(e) for e in data["epsilon"].unique()})
        anchor = budgets[norm].anchor if norm in budgets else math.nan
        if epsilons is None:
            chosen = budgets[norm].epsilons if norm in budgets else grid[:1]
        else:
            chosen = _match_epsilons(grid, epsilons)
        if not chosen:
            logger.info("no requested epsilon on the %s grid; accuracy-vs-sparsity skipped", norm)
            continue
        with _theme():
            fig, axes = plt.subplots(
                1, len(chosen), figsize=(3.6 * len(chosen) + 0.8, 3.8), sharey=True, squeeze=False
            )
            for ax, eps in zip(axes[0], chosen, strict=True):
                at = data[np.isclose(data["epsilon"].to_numpy(float), eps, rtol=1e-9, atol=0)]
                dense = at[
                    [
                        _is_dense(str(g), float(t))
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
                        marker=_MARKERS.get(g, "v"),
                        linestyle=_LINESTYLES.get(g, "-"),
                        capsize=2,
                        linewidth=1.6,
                        markersize=5,
                        label=g,
                    )
                for row in _rows(dense):
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
                ax.set_title(
                    f"ε = {epsilon_label(eps, grid)}" + (" (anchor)" if eps == anchor else "")
                )
                ax.set_xlabel("achieved sparsity (%)")
                ax.set_xlim(-3, 103)
                ax.set_ylim(-0.02, 1.02)
                ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            axes[0][0].set_ylabel("worst-case robust accuracy")
            handles = [
                Line2D(
                    [],
                    [],
                    color=colors[g],
                    marker=_MARKERS.get(g, "v"),
                    linestyle=_LINESTYLES.get(g, "-"),
                    label=g,
                )
                for g in granularities
            ]
            handles.append(
                Line2D(
                    [], [], color="black", marker="*", linestyle=":", markersize=9, label="dense"
                )
            )
            _legend_outside(fig, handles, "granularity")
            fig.suptitle(
                f"Worst-case robust accuracy vs sparsity ({_norm_label(str(norm))}) — "
                f"{_describe(data)}  (bars: 95% Wilson)",
                fontsize=11,
            )
            fig.tight_layout()
            paths += _save(fig, out, f"accuracy_vs_sparsity_{norm}")
    return paths


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
    styles = _checkpoint_styles(results) if results is not None and not results.empty else {}
    checkpoints = [c for c in styles if c in set(data["checkpoint"])] + sorted(
        {str(c) for c in data["checkpoint"].unique()} - set(styles)
    )
    fallback = dict(zip(checkpoints, sns.color_palette("deep", len(checkpoints)), strict=True))
    panels = sorted(
        {(str(a), str(b)) for a, b in zip(data["attack"], data["backend"], strict=True)}
    )
    with _theme():
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
        _legend_outside(fig, list(handles.values()), "checkpoint")
        n_clean = sorted({int(v) for v in data.groupby("checkpoint").size()})
        desc = _describe(results) if results is not None and not results.empty else ""
        title = "Minimum-norm (C&W) L2 distance ECDF"
        title += f" — {desc}" if desc else ""
        title += f" (clean-correct: {n_clean[0]}" + (
            f"–{n_clean[-1]})" if len(n_clean) > 1 else ")"
        )
        if never_total == 0:
            title += "\nan adversarial was found for every clean-correct example"
        fig.suptitle(title, fontsize=11)
        fig.tight_layout()
        return _save(fig, out, "cw_ecdf")


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
    granularities = sorted(
        {str(g) for g in wc["granularity"].unique() if g != DENSE}, key=_granularity_rank
    )
    palette = dict(zip(granularities, sns.color_palette("deep", len(granularities)), strict=True))
    budgets = choose_budgets(wc)
    for norm in _norms(wc):
        data = wc[wc["norm"] == norm]
        grid = sorted({float(e) for e in data["epsilon"].unique()})
        if epsilon is None:
            eps = budgets[norm].anchor if norm in budgets else grid[0]
        else:
            matched = _match_epsilons(grid, [epsilon])
            if not matched:
                logger.info("epsilon %g not on the %s grid; clean-vs-robust skipped", epsilon, norm)
                continue
            eps = matched[0]
        at = data[np.isclose(data["epsilon"].to_numpy(float), eps, rtol=1e-9, atol=0)].copy()
        at["_dense"] = [
            _is_dense(str(g), float(t))
            for g, t in zip(at["granularity"], at["sparsity_target"], strict=True)
        ]
        sparse, dense = at[~at["_dense"]], at[at["_dense"]]
        with _theme():
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
                    markers={g: _MARKERS.get(g, "v") for g in granularities},
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
                    for row in _rows(sparse)
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
            ax.set_xlabel("clean accuracy")
            ax.set_ylabel("worst-case robust accuracy")
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
            ax.set_title(
                f"Clean vs robust accuracy ({_norm_label(str(norm))}, "
                f"ε = {epsilon_label(eps, grid)})\n{_describe(data)}",
                fontsize=11,
            )
            fig.tight_layout()
            if not sparse.empty:  # placed last: layout changes move points on the canvas
                _place_labels(ax, point_labels)
            paths += _save(fig, out, f"clean_vs_robust_{norm}")
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


def plot_all(results_dir: str | os.PathLike[str]) -> list[Path]:
    """Draw every figure of a results directory into ``<results_dir>/figures``; return the paths."""
    from evaluations.record.training_methods import plot_training_curves

    root = Path(results_dir)
    df = read_results(root)
    min_norms = read_min_norms(root, missing_ok=True)
    out = root / FIGURES_DIR
    paths: list[Path] = []
    paths += plot_robustness_curves(df, out)
    paths += plot_accuracy_vs_sparsity(df, out)
    paths += plot_cw_ecdf(min_norms, out, results=df)
    from evaluations.present.plots_security import plot_security_curves  # (imports this module)
    from evaluations.record.security import read_min_norm_table

    paths += plot_security_curves(read_min_norm_table(root), df, out)
    paths += plot_clean_vs_robust(df, out)
    paths += plot_training_curves(df, out)  # adversarially trained checkpoints only
    logger.info("wrote %d figure files to %s", len(paths), out)
    return paths
