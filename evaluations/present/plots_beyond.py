"""Figures of the "Beyond the attack" section: certified accuracy vs radius, corruption heatmap.

``certified_<method>.{png,svg}``: certified accuracy against the radius (L2 for randomized
smoothing, L-infinity eps for IBP) with the 95 % Clopper-Pearson band of ``certified.csv``; one
panel per sparse granularity, each with the dense model in thick black, as the robustness curves.
``corruptions_heatmap.{png,svg}``: one panel per sparse checkpoint, corruption x severity, its
accuracy minus its dense reference's (:func:`evaluations.record.corruptions.corruption_summary`),
in percentage points.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import PercentFormatter

from evaluations.present.plot_style import (
    checkpoint_handles,
    checkpoint_styles,
    granularity_rank,
    is_dense_model,
    legend_outside,
    save_figure,
    seaborn_theme,
)
from evaluations.record.corruptions import CLEAN, corruption_summary

__all__ = ["plot_beyond", "plot_certified", "plot_corruption_heatmap"]

logger = logging.getLogger(__name__)

_AXIS = {"l2": "L2 radius", "linf": "L∞ ε"}


def _styled(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    if "clean_accuracy" not in out.columns:
        out["clean_accuracy"] = math.nan
    return out


def _dense(df: pd.DataFrame) -> set[str]:
    return {
        str(c)
        for c, g, t in zip(df["checkpoint"], df["granularity"], df["sparsity_target"], strict=True)
        if is_dense_model(str(g), float(t))
    }


def plot_certified(cert: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Certified accuracy vs radius from ``certified.csv`` rows; one figure per method."""
    paths: list[Path] = []
    if cert.empty:
        return paths
    styles = checkpoint_styles(_styled(cert))
    dense = _dense(cert)
    for method, data in cert.groupby("method", sort=True):
        facets = sorted(
            {
                str(g)
                for c, g in zip(data["checkpoint"], data["granularity"], strict=True)
                if str(c) not in dense
            },
            key=granularity_rank,
        ) or ["dense"]
        with seaborn_theme():
            fig, axes = plt.subplots(
                1, len(facets), figsize=(3.3 * len(facets) + 2.6, 3.4), sharey=True, squeeze=False
            )
            for ax, facet in zip(axes[0], facets, strict=True):
                for name, rows in data.groupby("checkpoint", sort=False):
                    if str(name) not in dense and str(rows["granularity"].iloc[0]) != facet:
                        continue
                    rows = rows.sort_values("radius")
                    st = styles[str(name)]
                    ax.plot(
                        rows["radius"],
                        rows["certified_accuracy"],
                        color=st.color,
                        linestyle=st.linestyle,
                        marker=st.marker,
                        linewidth=st.linewidth,
                        zorder=st.zorder,
                    )
                    ax.fill_between(
                        rows["radius"],
                        rows["certified_accuracy_low"],
                        rows["certified_accuracy_high"],
                        color=st.color,
                        alpha=0.12,
                    )
                ax.set_title(f"{method}: {facet}", fontsize=10)
                ax.set_xlabel(_AXIS.get(str(data["norm"].iloc[0]), "radius"))
                ax.set_ylim(-0.02, 1.02)
                ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            axes[0][0].set_ylabel("certified accuracy")
            legend_outside(
                fig, checkpoint_handles(styles, data["checkpoint"].unique()), "checkpoint"
            )
            paths += save_figure(fig, out_dir, f"certified_{method}")
    return paths


def plot_corruption_heatmap(corr: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Accuracy minus the dense reference's, per corruption x severity; one panel per sparse
    checkpoint that has a dense reference (none: no figure)."""
    summary = corruption_summary(corr)
    refs = {
        str(r["checkpoint"]): str(r["reference"])
        for r in summary.to_dict("records")
        if r["reference"] and r["reference"] != r["checkpoint"]
    }
    if not refs:
        logger.info("no sparse checkpoint with a dense reference; corruption heatmap skipped")
        return []
    rows = corr[corr["corruption"] != CLEAN]
    names = list(dict.fromkeys(rows["corruption"]))
    severities = sorted({int(s) for s in rows["severity"]})
    acc = rows.pivot_table(
        index=["checkpoint", "corruption"], columns="severity", values="accuracy"
    )
    vmax = 0.0
    grids = {}
    for name, ref in refs.items():
        diff = (
            pd.DataFrame(acc.loc[name] - acc.loc[ref]).reindex(index=names, columns=severities)
            * 100
        )
        grids[name] = diff
        vmax = max(vmax, float(np.nanmax(np.abs(diff.to_numpy()))) if diff.size else 0.0)
    vmax = max(vmax, 1.0)
    with seaborn_theme():
        fig, axes = plt.subplots(
            1,
            len(grids),
            figsize=(2.4 * len(grids) + 2.0, 0.32 * len(names) + 1.6),
            sharey=True,
            squeeze=False,
        )
        image = None
        for ax, (name, diff) in zip(axes[0], grids.items(), strict=True):
            image = ax.imshow(diff.to_numpy(), cmap="RdBu", vmin=-vmax, vmax=vmax, aspect="auto")
            ax.set_xticks(range(len(severities)), [str(s) for s in severities])
            ax.set_yticks(range(len(names)), names, fontsize=8)
            ax.set_xlabel("severity")
            ax.set_title(name, fontsize=9)
            ax.grid(False)
        if image is not None:
            fig.colorbar(image, ax=axes[0].tolist(), label="accuracy − dense (points)")
        paths = save_figure(fig, out_dir, "corruptions_heatmap")
    return paths


def plot_beyond(cert: pd.DataFrame | None, corr: pd.DataFrame | None, out_dir: Path) -> list[Path]:
    """Both figures for whichever of the two tables is present."""
    paths: list[Path] = []
    if cert is not None:
        paths += plot_certified(cert, out_dir)
    if corr is not None:
        paths += plot_corruption_heatmap(corr, out_dir)
    return paths
