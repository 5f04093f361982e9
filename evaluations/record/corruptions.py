"""``corruptions.csv``: accuracy under common corruptions, and its summaries.

One row per (checkpoint, corruption, severity); the clean accuracy is the row with corruption
``none`` and severity 0. Columns (issue 28 contract):

=================  =====  ========================================================================
column             type   meaning
=================  =====  ========================================================================
checkpoint ...     str    checkpoint, arch, dataset, granularity, sparsity_target,
                          sparsity_achieved, training: as in ``results.csv``
corruption         str    a Hendrycks & Dietterich (2019) corruption, or ``none`` (clean)
severity           int    1..5 (0 for clean)
n, correct         int    examples and correctly classified ones
accuracy           float  correct / n
accuracy_low/high  float  95 % Wilson interval
seconds            float  corrupting + evaluating time
parameters         str    ``cifar10-c`` or ``imagenet-c``: which table set the strength
=================  =====  ========================================================================

Summaries (:func:`corruption_summary`): the mean corruption accuracy over the 15 test corruptions x 5
severities (RobustBench's CIFAR-10-C score, on generated images), and the corruption error CE_c =
sum_s E_{s,c} / sum_s E^dense_{s,c}, mCE = mean_c CE_c, relative CE_c = sum_s (E_{s,c} - E_clean) /
sum_s (E^dense_{s,c} - E^dense_clean) and relative mCE (Hendrycks & Dietterich 2019, section 3,
with the run's own dense model of the same dataset, architecture and training in AlexNet's
place, so the dense model scores 100 %).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from evaluations.record.metrics import wilson_interval
from evaluations.record.results import write_table

__all__ = [
    "CLEAN",
    "COLUMNS",
    "COMMON_CORRUPTIONS",
    "CORRUPTIONS_CSV",
    "corruption_summary",
    "read_corruptions",
    "with_intervals",
    "write_corruptions",
]

logger = logging.getLogger(__name__)

CORRUPTIONS_CSV = "corruptions.csv"
CLEAN = "none"
#: the 15 test corruptions (the mean and mCE are taken over these; the 4 held-out ones are not)
COMMON_CORRUPTIONS = frozenset(
    {
        "gaussian_noise",
        "shot_noise",
        "impulse_noise",
        "defocus_blur",
        "glass_blur",
        "motion_blur",
        "zoom_blur",
        "snow",
        "frost",
        "fog",
        "brightness",
        "contrast",
        "elastic_transform",
        "pixelate",
        "jpeg_compression",
    }
)
IDENT = (
    "checkpoint",
    "arch",
    "dataset",
    "granularity",
    "sparsity_target",
    "sparsity_achieved",
    "training",
)
COLUMNS = (
    *IDENT,
    "corruption",
    "severity",
    "n",
    "correct",
    "accuracy",
    "accuracy_low",
    "accuracy_high",
    "seconds",
    "parameters",
)


def with_intervals(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``accuracy`` and its 95 % Wilson bounds computed from ``correct`` / ``n``."""
    out = df.copy()
    out["accuracy"] = out["correct"] / out["n"]
    low, high = wilson_interval(out["correct"].to_numpy(), out["n"].to_numpy())
    out["accuracy_low"], out["accuracy_high"] = low, high
    return out


def write_corruptions(df: pd.DataFrame, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``corruptions.csv`` atomically into ``out_dir`` (columns :data:`COLUMNS`).

    Raises:
        ValueError: a column is missing.
    """
    return write_table(df, COLUMNS, Path(out_dir) / CORRUPTIONS_CSV, "corruption")


def read_corruptions(path: str | os.PathLike[str]) -> pd.DataFrame | None:
    """``corruptions.csv`` of a results directory (or the file itself); ``None`` when absent."""
    p = Path(path)
    p = p if p.suffix == ".csv" else p / CORRUPTIONS_CSV
    if not p.is_file():
        return None
    return pd.read_csv(p, keep_default_na=False, na_values={"sparsity_achieved": ["", "nan"]})


def _dense_reference(df: pd.DataFrame, row: pd.Series) -> str | None:
    """The dense checkpoint of ``row``'s dataset, architecture and training (first by name)."""
    same = df[
        (df["dataset"] == row["dataset"])
        & (df["arch"] == row["arch"])
        & (df["training"] == row["training"])
        & ((df["granularity"] == "dense") | (df["sparsity_target"].astype(float) == 0.0))
    ]
    names = sorted(set(same["checkpoint"].astype(str)))
    return names[0] if names else None


def _errors(df: pd.DataFrame, name: str) -> tuple[pd.DataFrame, float]:
    """Checkpoint ``name``'s common-corruption error rows (corruption, severity, err) and clean
    error (NaN when no clean row)."""
    rows = df[df["checkpoint"] == name]
    clean = rows[rows["corruption"] == CLEAN]
    clean_err = float(1 - clean["accuracy"].iloc[0]) if len(clean) else math.nan
    common = rows[rows["corruption"].isin(COMMON_CORRUPTIONS)]
    return common.assign(err=1 - common["accuracy"]), clean_err


def _ce(
    mine: pd.DataFrame, ref: pd.DataFrame, clean: float, ref_clean: float
) -> tuple[float, float]:
    """(mCE, relative mCE) over the corruptions both have; NaN where a denominator is 0."""
    ces, rel = [], []
    for c, g in mine.groupby("corruption"):
        r = ref[ref["corruption"] == c]
        if len(r) == 0:
            continue
        base = float(r["err"].sum())
        ces.append(float(g["err"].sum()) / base if base > 0 else math.nan)
        base_rel = float((r["err"] - ref_clean).sum())
        rel.append(float((g["err"] - clean).sum()) / base_rel if base_rel > 0 else math.nan)
    mean = lambda v: float(np.mean(v)) if v and not np.isnan(v).any() else math.nan  # noqa: E731
    return mean(ces), mean(rel)


def corruption_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per checkpoint: identity columns, ``clean_accuracy``, ``mean_accuracy`` over the
    15 test corruptions x severities present, its 95 % interval (``mean_low``, ``mean_high``:
    Wilson at the per-image n; conservative, since a per-image mean score in [0, 1] has variance at
    most p(1 - p)), ``n`` (images), ``cells`` (corruption x severity pairs averaged), ``reference``
    (the dense checkpoint), ``mce`` and ``relative_mce`` (fractions; 1.0 for the dense model;
    NaN without a dense reference or when its errors give a zero denominator)."""
    out = []
    for name, rows in df.groupby("checkpoint", sort=False):
        first = rows.iloc[0]
        mine, clean_err = _errors(df, str(name))
        n = int(rows["n"].max())
        mean = float(mine["accuracy"].mean()) if len(mine) else math.nan
        low, high = (math.nan, math.nan)
        if len(mine) and n > 0:
            low, high = wilson_interval(mean * n, n)
        ref = _dense_reference(df, first)
        mce = rel = math.nan
        if ref is not None and len(mine):
            theirs, ref_clean = _errors(df, ref)
            mce, rel = _ce(mine, theirs, clean_err, ref_clean)
        out.append(
            {
                **{k: first[k] for k in IDENT},
                "clean_accuracy": 1 - clean_err,
                "mean_accuracy": mean,
                "mean_low": low,
                "mean_high": high,
                "n": n,
                "cells": len(mine),
                "reference": ref or "",
                "mce": mce,
                "relative_mce": rel,
            }
        )
    return pd.DataFrame(out)
