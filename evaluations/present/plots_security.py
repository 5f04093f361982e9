"""The minimum-norm security-curve figure: ``figures/security_curves_<norm>.{png,svg}``.

Per norm one panel: for every checkpoint the robust accuracy vs epsilon *step curve* read off the
per-example smallest perturbations (:mod:`evaluations.record.security`), with the grid's worst-case points
on top (they lie on the curve by construction), so the curve between grid points comes from the
minimum-norm attacks (C&W, FMN, FAB) and the grid points from every attack.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import PercentFormatter

from evaluations.present.ordering import NORM_LABEL, norm_label
from evaluations.present.plot_style import (
    checkpoint_styles,
    describe_results,
    eps_axis_label,
    save_figure,
    seaborn_theme,
)
from evaluations.record.metrics import WORST_CASE
from evaluations.record.security import security_curve

__all__ = ["plot_security_curves"]

logger = logging.getLogger(__name__)


def plot_security_curves(
    table: pd.DataFrame, results: pd.DataFrame, out_dir: str | os.PathLike[str]
) -> list[Path]:
    """Draw one figure per norm of ``table`` (the min-norm table) with ``results``' worst case.

    Returns the written PNG and SVG paths (none when ``table`` is empty).
    """
    if table.empty or results.empty:
        return []
    out = Path(out_dir)
    styles = checkpoint_styles(results)
    paths: list[Path] = []
    for norm in [n for n in NORM_LABEL if n in set(table["norm"])]:
        sub = table[table["norm"] == norm]
        wc = results[(results["attack"] == WORST_CASE) & (results["norm"] == norm)]
        right = float(wc["epsilon"].max()) if not wc.empty else float(np.nan)
        with seaborn_theme():
            fig, ax = plt.subplots(figsize=(7.5, 4.5))
            names = [c for c in styles if c in set(sub["checkpoint"])]
            names += sorted(set(sub["checkpoint"]) - set(names))
            for name in names:
                best = sub.loc[sub["checkpoint"] == name, "best_norm"].to_numpy(np.float64)
                eps, acc = security_curve(best)
                if np.isfinite(right) and right > 0:  # draw up to the grid's largest epsilon
                    keep = eps <= right
                    eps, acc = np.append(eps[keep], right), np.append(acc[keep], acc[keep][-1])
                s = styles.get(name)
                ax.step(
                    eps,
                    acc,
                    where="post",
                    color=s.color if s else None,
                    linestyle=s.linestyle if s else "-",
                    linewidth=s.linewidth if s else 1.6,
                    label=s.label if s else name,
                )
                points = wc[wc["checkpoint"] == name]
                ax.scatter(
                    points["epsilon"],
                    points["robust_accuracy"],
                    color=s.color if s else None,
                    marker=s.marker if s else "o",
                    s=18,
                    zorder=s.zorder if s else 3,
                )
            if np.isfinite(right) and right > 0:
                ax.set_xlim(0, right * 1.02)
            ax.set_ylim(-0.02, 1.02)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_xlabel(eps_axis_label(norm))
            ax.set_ylabel("robust accuracy (smallest perturbation found)")
            ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, fontsize=8)
            ax.set_title(
                f"Security curves ({norm_label(norm)}): every ε, "
                f"grid worst case as markers\n{describe_results(results)}",
                fontsize=11,
            )
            fig.tight_layout()
            paths += save_figure(fig, out, f"security_curves_{norm}")
    return paths
