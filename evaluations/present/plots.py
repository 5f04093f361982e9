"""Figures of a results directory: robustness curves, accuracy vs sparsity, C&W distance ECDFs, clean vs robust.

Every function writes one PNG and one SVG per figure (atomically) and returns the written paths; a
figure whose data is absent is skipped with an INFO log line. File names (``<norm>`` is ``linf``,
``l2`` or ``l1``):

* ``robustness_curves_<norm>.{png,svg}`` robust accuracy vs epsilon, one panel per attack
* ``accuracy_vs_sparsity_<norm>.{png,svg}`` worst-case robust accuracy vs achieved sparsity
* ``cw_ecdf.{png,svg}`` ECDF of minimum-norm (C&W) L2 distances per checkpoint
* ``clean_vs_robust_<norm>.{png,svg}`` clean vs worst-case robust accuracy at one epsilon
* ``robustness_vs_cost_<norm>.{png,svg}`` robustness vs modelled speed-up and weight bytes

:func:`plot_all` draws them all from a results directory into ``<results_dir>/figures``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from evaluations.present.plot_style import layout_problems, thin_tick_labels
from evaluations.present.plots_cost import plot_robustness_vs_cost
from evaluations.present.plots_curves import plot_accuracy_vs_sparsity, plot_robustness_curves
from evaluations.present.plots_points import plot_clean_vs_robust, plot_cw_ecdf
from evaluations.present.plots_security import plot_security_curves
from evaluations.present.plots_training import plot_training_curves
from evaluations.record.costs import read_costs
from evaluations.record.results import FIGURES_DIR, read_min_norms, read_results
from evaluations.record.security import read_min_norm_table

__all__ = [
    "FIGURES_DIR",
    "layout_problems",
    "plot_accuracy_vs_sparsity",
    "plot_all",
    "plot_clean_vs_robust",
    "plot_cw_ecdf",
    "plot_robustness_curves",
    "plot_security_curves",
    "plot_training_curves",
    "thin_tick_labels",
]

logger = logging.getLogger(__name__)


def plot_all(results_dir: str | os.PathLike[str]) -> list[Path]:
    """Draw every figure of a results directory into ``<results_dir>/figures``; return the paths."""

    root = Path(results_dir)
    df = read_results(root)
    min_norms = read_min_norms(root, missing_ok=True)
    out = root / FIGURES_DIR
    paths: list[Path] = []
    paths += plot_robustness_curves(df, out)
    paths += plot_accuracy_vs_sparsity(df, out)
    paths += plot_cw_ecdf(min_norms, out, results=df)
    paths += plot_security_curves(read_min_norm_table(root), df, out)
    paths += plot_clean_vs_robust(df, out)
    paths += plot_robustness_vs_cost(df, read_costs(root), out)  # needs costs.csv
    paths += plot_training_curves(df, out)  # adversarially trained checkpoints only
    logger.info("wrote %d figure files to %s", len(paths), out)
    return paths
