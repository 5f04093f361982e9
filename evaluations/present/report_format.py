"""Formatting shared by the report's sections: percentages, epsilons, durations, orders and labels."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

GRANULARITY_ORDER = ("dense", "window", "channel", "combined", "nm", "unstructured")
FIGURE_ORDER = (
    "robustness_curves",
    "security_curves",
    "accuracy_vs_sparsity",
    "clean_vs_robust",
    "robustness_vs_cost",
    "cw_ecdf",
)


#: The denominator of every "achieved" sparsity in the report (LoadedCheckpoint.sparsity_achieved).
ACHIEVED_NOTE = (
    "Achieved sparsity = zero weights / all weights of the pruned layers (the first convolution and "
    "the classifier count only when pruned), measured on the checkpoint's weights, next to the "
    "target."
)


# --------------------------------------------------------------------------- formatting helpers


def pct(value: Any, digits: int = 1) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return f"{100.0 * v:.{digits}f}" if math.isfinite(v) else "–"


def fmt_seconds(seconds: Any) -> str:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return str(seconds)
    if not math.isfinite(s):
        return "–"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def joined(values: Any) -> str:
    return ", ".join(sorted({str(v) for v in values}))


def checkpoint_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per checkpoint, dense first, then by granularity and sparsity."""
    table = (
        df.groupby("checkpoint", sort=False)
        .agg(
            granularity=("granularity", "first"),
            sparsity_target=("sparsity_target", "first"),
            sparsity_achieved=("sparsity_achieved", "first"),
            n=("n", "max"),
            clean_correct=("clean_correct", "first"),
            clean_accuracy=("clean_accuracy", "first"),
        )
        .reset_index()
    )
    rank = {g: i for i, g in enumerate(GRANULARITY_ORDER)}
    table["_rank"] = table["granularity"].map(lambda g: rank.get(str(g), len(rank)))
    return (
        table.sort_values(["_rank", "sparsity_target", "checkpoint"])
        .drop(columns="_rank")
        .reset_index(drop=True)
    )
