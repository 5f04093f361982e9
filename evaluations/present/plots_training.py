"""Training curves of adversarially trained checkpoints: robust validation accuracy per epoch.

One figure, ``training_curves.{png,svg}``, drawn from the per-epoch history each checkpoint
recorded; written only when the results include adversarially trained checkpoints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from evaluations.present.ordering import norm_label
from evaluations.present.plot_style import save_figure, seaborn_theme
from evaluations.record.metrics import WORST_CASE
from evaluations.record.training_methods import (
    has_training_methods,
    structure_key,
    training_budgets,
    with_structure,
)


def plot_training_curves(df: pd.DataFrame, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Worst-case robust accuracy vs eps, one panel per training method, one line per structure.

    One figure per training norm, ``training_curves_<norm>.{png,svg}``; nothing when the results
    hold no adversarially trained checkpoint.
    """
    if not has_training_methods(df):
        return []
    import matplotlib.pyplot as plt

    data = with_structure(df)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for norm in sorted({n for n, _ in training_budgets(df)}):
        sub = data[(data["attack"] == WORST_CASE) & (data["norm"] == norm)]
        if sub.empty:
            continue
        trainings = sorted(sub["training"].unique(), key=lambda t: (t != "standard", t))
        structures = sorted(sub["structure"].unique(), key=structure_key)
        with seaborn_theme():
            cmap = plt.get_cmap("tab10" if len(structures) <= 10 else "tab20")
            fig, axes = plt.subplots(
                1,
                len(trainings),
                figsize=(4.2 * len(trainings) + 1.5, 3.8),
                sharey=True,
                squeeze=False,
            )
            for ax, training in zip(axes[0], trainings, strict=True):
                part = sub[sub["training"] == training]
                for k, structure in enumerate(structures):
                    line = part[part["structure"] == structure].sort_values("epsilon")
                    if line.empty:
                        continue
                    ax.plot(
                        line["epsilon"],
                        100 * line["robust_accuracy"],
                        marker="o",
                        ms=3,
                        lw=2.4 if structure == "dense" else 1.3,
                        color="black" if structure == "dense" else cmap(k % cmap.N),
                        label=structure,
                    )
                for n, e in training_budgets(df):
                    if n == norm:
                        ax.axvline(e, color="grey", ls=":", lw=1)
                ax.set_title(str(training), fontsize=10)
                ax.set_xlabel(f"epsilon ({norm_label(norm)}, pixel units in [0, 1])")
                ax.set_ylim(0, 100)
                ax.grid(alpha=0.3)
            axes[0][0].set_ylabel("worst-case robust accuracy (%)")
            legend: dict[str, Any] = {}
            for ax in axes[0]:
                for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                    legend.setdefault(lab, h)
            fig.legend(
                list(legend.values()), list(legend), loc="center right", fontsize=8, frameon=False
            )
            fig.tight_layout(rect=(0, 0, 1 - 1.3 / fig.get_figwidth(), 1))
            paths += save_figure(fig, out, f"training_curves_{norm}")
    return paths
