"""``certified.csv`` and the per-example certificate files of ``rbs certify`` (issue 28).

One row per (checkpoint, method, radius). Columns:

========================  =====  ==================================================================
column                    type   meaning
========================  =====  ==================================================================
checkpoint ... training   str    checkpoint, arch, dataset, granularity, sparsity_target,
                                 sparsity_achieved, training: as in ``results.csv``
method                    str    ``smoothing`` (Cohen et al. 2019) or ``ibp`` (Gowal et al. 2018)
norm                      str    ``l2`` (smoothing) or ``linf`` (ibp)
radius                    float  the L2 radius / L-infinity eps, in [0, 1] pixel units
n                         int    examples certified
certified_correct         int    examples certified *and* correct at ``radius``
certified_accuracy        float  certified_correct / n
certified_accuracy_low    float  95 % Clopper-Pearson interval over the examples
certified_accuracy_high   float
abstained                 int    examples where CERTIFY abstained (0 for ibp)
sigma                     float  smoothing noise (NaN for ibp)
n0, n_samples, alpha      int/…  smoothing's selection / estimation samples and failure
                                 probability (0, 0, NaN for ibp)
seconds                   float  certification time of the checkpoint (every radius)
========================  =====  ==================================================================

Per-example files ``certify/<checkpoint>@<method>.csv``: ``index`` (in the evaluated split),
``label``, ``prediction`` (smoothing: ``-1`` where it abstained), then ``radius`` (smoothing,
``-1``: abstained) or one ``verified_<eps>`` column per eps (ibp).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluations.record.results import write_table
from robustbench_sparse.atomic import atomic_path

__all__ = [
    "CERTIFIED_CSV",
    "CERTIFY_DIR",
    "COLUMNS",
    "certified_rows",
    "example_file",
    "read_certified",
    "write_certified",
    "write_examples",
]

logger = logging.getLogger(__name__)

CERTIFIED_CSV = "certified.csv"
CERTIFY_DIR = "certify"
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
    "method",
    "norm",
    "radius",
    "n",
    "certified_correct",
    "certified_accuracy",
    "certified_accuracy_low",
    "certified_accuracy_high",
    "abstained",
    "sigma",
    "n0",
    "n_samples",
    "alpha",
    "seconds",
)


def _interval(k: int, n: int) -> tuple[float, float]:
    """95 % two-sided Clopper-Pearson interval of ``k / n`` (SciPy's exact interval)."""
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest  # here: scipy.stats is half a second of every start-up

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return float(ci.low), float(ci.high)


def certified_rows(
    ident: Mapping[str, Any],
    *,
    method: str,
    norm: str,
    radii: Sequence[float],
    correct: Sequence[int],
    n: int,
    abstained: int = 0,
    sigma: float = float("nan"),
    n0: int = 0,
    n_samples: int = 0,
    alpha: float = float("nan"),
    seconds: float = 0.0,
) -> list[dict[str, Any]]:
    """The rows of one (checkpoint, method): one per radius, with the accuracy and its interval."""
    rows = []
    for r, k in zip(radii, correct, strict=True):
        low, high = _interval(int(k), n)
        rows.append(
            {
                **ident,
                "method": method,
                "norm": norm,
                "radius": float(r),
                "n": n,
                "certified_correct": int(k),
                "certified_accuracy": int(k) / n if n else float("nan"),
                "certified_accuracy_low": low,
                "certified_accuracy_high": high,
                "abstained": int(abstained),
                "sigma": float(sigma),
                "n0": int(n0),
                "n_samples": int(n_samples),
                "alpha": float(alpha),
                "seconds": float(seconds),
            }
        )
    return rows


def write_certified(df: pd.DataFrame, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``certified.csv`` atomically into ``out_dir`` (columns :data:`COLUMNS`).

    Raises:
        ValueError: a column is missing.
    """
    return write_table(df, COLUMNS, Path(out_dir) / CERTIFIED_CSV, "certified")


def read_certified(path: str | os.PathLike[str]) -> pd.DataFrame | None:
    """``certified.csv`` of a results directory (or the file itself); ``None`` when absent."""
    p = Path(path)
    p = p if p.suffix == ".csv" else p / CERTIFIED_CSV
    if not p.is_file():
        return None
    return pd.read_csv(p, keep_default_na=False, na_values={c: ["", "nan", "NaN"] for c in (
        "sparsity_achieved", "sigma", "alpha")})  # fmt: skip


def example_file(out_dir: str | os.PathLike[str], checkpoint: str, method: str) -> Path:
    """``out_dir/certify/<checkpoint>@<method>.csv`` (``/`` in a name becomes ``_``)."""
    return Path(out_dir) / CERTIFY_DIR / f"{checkpoint.replace('/', '_')}@{method}.csv"


def write_examples(
    out_dir: str | os.PathLike[str], checkpoint: str, method: str, columns: Mapping[str, Any]
) -> Path:
    """Write one per-example file atomically; ``columns``: name -> (N,) values (index first)."""
    path = example_file(out_dir, checkpoint, method)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({k: np.asarray(v) for k, v in columns.items()})
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path
