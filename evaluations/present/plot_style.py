"""The shared look of every figure: checkpoint styles (colour = target sparsity, marker = granularity),
the seaborn theme, epsilon axes, tick thinning, legends and the one atomic PNG + SVG writer.
"""

import logging
import math
from collections.abc import Iterable, Sequence
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

from attacks.params import format_epsilon, in_255ths
from evaluations.present.ordering import iter_rows
from robustbench_sparse.atomic import atomic_path

logger = logging.getLogger(__name__)


DENSE = "dense"

# Campfire granularities, then the other pruning methods' labels (see SparsityConfig.label).
GRANULARITY_ORDER = (
    "dense",
    "window",
    "channel",
    "combined",
    "nm",
    "unstructured",
    "gmp",
    "random-uniform",
    "random-erk",
    "grasp",
    "filter",
)
LINESTYLES: dict[str, Any] = {
    "window": "-",
    "channel": "--",
    "combined": "-.",
    "nm": (0, (4, 1, 1, 1)),
    "unstructured": ":",
    "gmp": (0, (1, 1)),
    "random-uniform": (0, (5, 1)),
    "random-erk": (0, (5, 1)),
    "grasp": (0, (3, 1, 1, 1, 1, 1)),
    "filter": (0, (8, 2, 2, 2)),
}
MARKERS = {
    "dense": "*",
    "window": "o",
    "channel": "s",
    "combined": "^",
    "nm": "v",
    "unstructured": "D",
    "gmp": "d",
    "random-uniform": "x",
    "random-erk": "X",
    "grasp": "P",
    "filter": "h",
}
DPI = 150
TRIM_FLOOR = 0.01  # curve axes stop once every model stays at or below 1 %


# --------------------------------------------------------------------------- styling helpers


@dataclass(frozen=True)
class CheckpointStyle:
    """How one checkpoint is drawn."""

    label: str
    color: Any
    linestyle: Any  # a matplotlib line style
    marker: str
    linewidth: float
    zorder: int


def percent(value: float) -> str:
    return f"{100.0 * value:.0f}%" if math.isfinite(value) else "?"


def granularity_rank(g: str) -> int:
    return GRANULARITY_ORDER.index(g) if g in GRANULARITY_ORDER else len(GRANULARITY_ORDER)


def is_dense_model(granularity: str, target: float) -> bool:
    return granularity == DENSE or target == 0.0


def granularity_colors(df: pd.DataFrame) -> tuple[list[str], dict[str, Any]]:
    """The sparse granularities of ``df`` in display order and one "deep" palette colour each."""
    granularities = sorted(
        {str(g) for g in df["granularity"].unique() if g != DENSE}, key=granularity_rank
    )
    colors = dict(zip(granularities, sns.color_palette("deep", len(granularities)), strict=True))
    return granularities, colors


def checkpoint_table(df: pd.DataFrame) -> pd.DataFrame:
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
        not is_dense_model(g, t)
        for g, t in zip(table["granularity"], table["sparsity_target"], strict=True)
    ]
    table["_rank"] = table["granularity"].map(granularity_rank)
    return table.sort_values(["_dense", "_rank", "sparsity_target", "checkpoint"]).drop(
        columns=["_dense", "_rank"]
    )


def sparsity_palette(targets: Iterable[float]) -> dict[float, Any]:
    levels = sorted({float(t) for t in targets if float(t) > 0.0})
    # Distinct hues (no black/grey: dense is black), in a fixed order: blue, orange, red, purple,
    # green, brown, pink, olive, cyan. Neighbouring sparsities never share a near-identical colour.
    tab = sns.color_palette("tab10", 10)
    order = [0, 1, 3, 4, 2, 5, 6, 8, 9]
    colors = [tab[order[i % len(order)]] for i in range(len(levels))]
    return {lvl: colors[i] for i, lvl in enumerate(levels)}


def checkpoint_styles(df: pd.DataFrame) -> dict[str, CheckpointStyle]:
    """Color = sparsity level, line style / marker = granularity; the dense baseline black and thick."""
    table = checkpoint_table(df)
    palette = sparsity_palette(table["sparsity_target"])
    # One sparsity level (e.g. a pruning-methods comparison at 70 %): color by granularity instead.
    sparse = [
        (str(g), float(t))
        for g, t in zip(table["granularity"], table["sparsity_target"], strict=True)
        if not is_dense_model(str(g), float(t))
    ]
    kinds = sorted({g for g, _ in sparse}, key=granularity_rank)
    by_kind = len({t for _, t in sparse}) == 1 and len(kinds) > 1
    kind_colors = dict(zip(kinds, sns.color_palette("tab10", len(kinds)), strict=True))
    labels: dict[str, str] = {}
    for row in iter_rows(table):
        g, t = str(row.granularity), float(row.sparsity_target)
        labels[str(row.checkpoint)] = (
            "dense"
            if is_dense_model(g, t)
            else f"{g} {percent(t)} (achieved {percent(row.sparsity_achieved)})"
        )
    duplicated = {lab for lab in labels.values() if list(labels.values()).count(lab) > 1}
    styles: dict[str, CheckpointStyle] = {}
    for row in iter_rows(table):
        name, g, t = str(row.checkpoint), str(row.granularity), float(row.sparsity_target)
        label = labels[name] + (f" [{name}]" if labels[name] in duplicated else "")
        if is_dense_model(g, t):
            styles[name] = CheckpointStyle(label, "black", "-", MARKERS["dense"], 2.8, 5)
        else:
            styles[name] = CheckpointStyle(
                label,
                kind_colors[g] if by_kind else palette[t],
                LINESTYLES.get(g, "-"),
                MARKERS.get(g, "v"),
                1.6,
                3,
            )
    return styles


def describe_results(df: pd.DataFrame) -> str:
    """``dataset · arch · n=…`` for titles."""

    def join(col: str) -> str:
        return ", ".join(sorted({str(v) for v in df[col].unique()}))

    ns = sorted({int(v) for v in df["n"].unique()})
    n = str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    return f"{join('dataset')} · {join('arch')} · n={n}"


def save_figure(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
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
                    tmp, format=ext, dpi=DPI, bbox_inches="tight", metadata=meta, facecolor="white"
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


def eps_axis_label(norm: str) -> str:
    """The epsilon axis label, with its unit (pixel values are in [0, 1])."""
    if norm == "linf":
        return "ε (L∞, pixel scale 0–1)"
    if norm == "l2":
        return "ε (L2 over the image, pixel scale 0–1)"
    if norm == "l1":
        return "ε (L1 over the image, pixel scale 0–1)"
    return f"ε ({norm})"


def eps_axis(ax: Any, grid: Sequence[float], norm: str, right: float) -> None:
    """Label an epsilon axis: unit, ``k/255`` ticks on a 1/255 grid, cut at ``right``."""
    ax.set_xlim(-0.02 * right, 1.03 * right if right > 0 else 1.0)
    if in_255ths(grid):
        ticks = spread_ticks([e for e in grid if e <= right * (1 + 1e-9)], 6)
        ax.set_xticks(ticks)
        ax.set_xticklabels([format_epsilon(e, grid=grid) for e in ticks])
    ax.set_xlabel(eps_axis_label(norm))


def seaborn_theme() -> Any:
    """Seaborn theme as a context manager (no global style changes)."""
    return plt.rc_context(
        {
            **sns.axes_style("whitegrid"),
            **sns.plotting_context("notebook", font_scale=0.9),
            "svg.hashsalt": "robustbench-sparse",
            "axes.titleweight": "bold",
        }
    )


def spread_ticks(values: Sequence[float], k: int) -> list[float]:
    """``k`` values spread evenly over the sorted ``values`` (first, last and in between)."""
    if len(values) <= k:
        return list(values)
    idx = sorted({round(i) for i in np.linspace(0, len(values) - 1, k)})
    return [values[i] for i in idx]


def match_epsilons(available: Sequence[float], wanted: Iterable[float]) -> list[float]:
    """Grid values matching ``wanted`` (relative tolerance); unknown ones are logged and dropped."""
    out: list[float] = []
    for eps in wanted:
        hits = [a for a in available if math.isclose(a, float(eps), rel_tol=1e-6, abs_tol=1e-12)]
        if hits:
            out.append(hits[0])
        else:
            logger.warning("epsilon %g is not on the grid %s; skipped", eps, list(available))
    return sorted(set(out))


def legend_outside(fig: Figure, handles: list[Any], title: str | None = None) -> None:
    fig.legend(
        handles=handles,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        frameon=False,
        title=title,
    )


def checkpoint_handles(styles: dict[str, CheckpointStyle], names: Iterable[str]) -> list[Line2D]:
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
