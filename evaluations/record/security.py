"""Minimum-norm security curves: per example, the smallest perturbation any attack found.

For every (checkpoint, norm, example) the table :data:`MIN_NORMS_FILE` (``min_norms.parquet`` +
``.csv`` in the results directory) records

* ``min_norm``: the smallest perturbation found by any *minimum-norm* attack (C&W, FMN, FAB;
  ``inf`` where none found one) and ``min_norm_attack``, the attack that found it;
* ``grid_epsilon``: the smallest grid epsilon at which any *fixed-budget* attack broke it (``inf``
  where none did) and ``grid_attack``;
* ``best_norm``: the smallest budget known to break the example: ``min(min_norm, grid_epsilon)``,
  and ``found_by``, the attack behind it; 0 for clean-misclassified examples
  (``found_by = "misclassified"``).

A fixed-budget adversarial counts at the grid epsilon it was found for (its measured norm may
exceed that epsilon by the verification tolerance, so using the measured norm could place it just
above the budget it was verified for). Hence, at every grid epsilon, the fraction of examples with
``best_norm > eps`` equals the per-example worst case over all attacks of that norm (the grid's
``worst_case`` row), and between grid points the curve uses the minimum-norm attacks' exact
distances: the robust accuracy vs epsilon *step curve at every epsilon* (Pintor et al., NeurIPS
2021; Piras et al. 2024, "Adversarial Pruning: A Survey and Benchmark", security curves).

From the table, per (checkpoint, norm): the median minimal norm (over all examples, 0 for the
clean-misclassified: the epsilon at which the curve crosses 50 %) with a seeded bootstrap 95 %
interval, and the area under the curve up to a stated epsilon (normalized: mean robust accuracy
over ``[0, eps_max]``, exactly ``mean(min(best_norm, eps_max)) / eps_max``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from attacks import AttackKind
from evaluations.record.cells import CellRecord
from robustbench_sparse.atomic import atomic_path

__all__ = [
    "MIN_NORMS_CSV",
    "MIN_NORMS_FILE",
    "MIN_NORM_TABLE_COLUMNS",
    "MISCLASSIFIED",
    "min_norm_table",
    "read_min_norm_table",
    "robust_accuracy_at",
    "security_curve",
    "security_summary",
    "write_min_norm_table",
]

logger = logging.getLogger(__name__)

MIN_NORMS_FILE = "min_norms.parquet"
MIN_NORMS_CSV = "min_norms.csv"
#: ``found_by`` of an example the model gets wrong without attack (best_norm 0).
MISCLASSIFIED = "misclassified"

MIN_NORM_TABLE_COLUMNS: list[str] = [
    "checkpoint",
    "norm",
    "example",
    "clean_correct",
    "min_norm",
    "min_norm_attack",
    "grid_epsilon",
    "grid_attack",
    "best_norm",
    "found_by",
]

SUMMARY_COLUMNS: list[str] = [
    "checkpoint",
    "norm",
    "n",
    "clean_correct",
    "found",
    "median_norm",
    "median_low",
    "median_high",
    "eps_max",
    "auc",
    "bootstrap",
    "seed",
]


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in MIN_NORM_TABLE_COLUMNS})


def _one(checkpoint: str, norm: str, cells: Sequence[CellRecord]) -> pd.DataFrame:
    """The rows of one (checkpoint, norm) from its cells (same examples in the same order)."""
    clean = cells[0].outcome.clean_correct.astype(bool)  # (N,)
    n = clean.shape[0]
    min_norm = np.full(n, np.inf)
    min_attack = np.full(n, "", dtype=object)
    grid_eps = np.full(n, np.inf)
    grid_attack = np.full(n, "", dtype=object)
    for c in cells:
        o = c.outcome
        if o.clean_correct.shape != (n,):
            raise ValueError(f"{checkpoint}/{c.attack}: cells of one checkpoint differ in size")
        if c.kind is AttackKind.MINIMUM_NORM and o.min_norm is not None:
            value = np.where(clean, np.asarray(o.min_norm, dtype=np.float64), np.inf)  # (N,)
            better = value < min_norm
            min_norm = np.where(better, value, min_norm)
            min_attack = np.where(better, c.attack, min_attack)
        elif c.kind is AttackKind.FIXED_BUDGET:
            eps = np.asarray(o.epsilons, dtype=np.float64)  # (K,)
            broken = ~o.robust.astype(bool) & clean[None, :]  # (K, N)
            first = np.where(broken, eps[:, None], np.inf).min(axis=0)  # (N,)
            better = first < grid_eps
            grid_eps = np.where(better, first, grid_eps)
            grid_attack = np.where(better, c.attack, grid_attack)
    use_min = min_norm <= grid_eps  # ties: the minimum-norm attack's exact distance
    best = np.where(use_min, min_norm, grid_eps)
    found_by = np.where(use_min, min_attack, grid_attack)
    found_by = np.where(np.isfinite(best), found_by, "")
    best = np.where(clean, best, 0.0)
    found_by = np.where(clean, found_by, MISCLASSIFIED)
    return pd.DataFrame(
        {
            "checkpoint": checkpoint,
            "norm": norm,
            "example": np.arange(n, dtype=np.int64),
            "clean_correct": clean,
            "min_norm": np.where(clean, min_norm, np.inf),
            "min_norm_attack": np.where(clean, min_attack, ""),
            "grid_epsilon": np.where(clean, grid_eps, np.inf),
            "grid_attack": np.where(clean, grid_attack, ""),
            "best_norm": best,
            "found_by": found_by,
        },
        columns=MIN_NORM_TABLE_COLUMNS,
    )


def min_norm_table(cells: Sequence[CellRecord]) -> pd.DataFrame:
    """One row per (checkpoint, norm, example) from the grid's cells; see the module docstring.

    ``cells``: every finished cell of a grid run (:class:`evaluations.engine.grid.CellRecord`); the cells
    of one (checkpoint, norm) must cover the same examples in the same order (the grid's do).
    """
    groups: dict[tuple[str, str], list[CellRecord]] = {}
    for c in cells:
        groups.setdefault((c.checkpoint, c.norm), []).append(c)
    frames = [_one(ck, norm, group) for (ck, norm), group in groups.items()]
    return _normalize(pd.concat(frames, ignore_index=True) if frames else _empty())


def _normalize(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in MIN_NORM_TABLE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"min-norm table is missing columns: {', '.join(missing)}")
    out = df.loc[:, MIN_NORM_TABLE_COLUMNS].copy().reset_index(drop=True)
    for col in ("checkpoint", "norm", "min_norm_attack", "grid_attack", "found_by"):
        out[col] = out[col].fillna("").astype(str)
    out["example"] = out["example"].astype("int64")
    out["clean_correct"] = out["clean_correct"].astype(bool)
    for col in ("min_norm", "grid_epsilon", "best_norm"):
        out[col] = out[col].astype("float64").fillna(math.inf)
    return out


def write_min_norm_table(out_dir: str | os.PathLike[str], table: pd.DataFrame) -> list[Path]:
    """Write ``min_norms.parquet`` and ``min_norms.csv`` atomically (nothing if ``table`` is empty)."""
    if table.empty:
        return []
    out = Path(out_dir)
    norm = _normalize(table)
    parquet, csv = out / MIN_NORMS_FILE, out / MIN_NORMS_CSV
    with atomic_path(parquet) as tmp:
        norm.to_parquet(tmp, index=False)
    with atomic_path(csv) as tmp:
        norm.to_csv(tmp, index=False)
    logger.info("wrote %d per-example minimal-norm rows to %s", len(norm), parquet)
    return [parquet, csv]


def read_min_norm_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``min_norms.parquet`` from a results directory (empty frame with the schema if absent).

    A per-attack file of an older run (no ``norm`` column) also gives an empty frame.
    """
    p = Path(path)
    file = p if p.is_file() else p / MIN_NORMS_FILE
    if not file.is_file():
        return _normalize(_empty())
    df = pd.read_parquet(file)
    if "best_norm" not in df.columns:
        logger.info("%s is an older per-attack table; no security curves", file)
        return _normalize(_empty())
    return _normalize(df)


def robust_accuracy_at(best_norm: npt.ArrayLike, eps: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Robust accuracy at each ``eps``: the fraction of examples with ``best_norm > eps``."""
    b = np.asarray(best_norm, dtype=np.float64).ravel()  # (N,)
    e = np.atleast_1d(np.asarray(eps, dtype=np.float64))  # (E,)
    if b.size == 0:
        return np.full(e.shape, np.nan)
    return np.asarray((b[None, :] > e[:, None]).mean(axis=1), dtype=np.float64)


def security_curve(
    best_norm: npt.ArrayLike,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The step curve: breakpoints ``eps`` (0 and every finite distinct ``best_norm``) and the
    robust accuracy from each breakpoint on (right-continuous: ``acc[i]`` holds on
    ``[eps[i], eps[i + 1])``)."""
    b = np.asarray(best_norm, dtype=np.float64).ravel()
    points = np.unique(np.concatenate([[0.0], b[np.isfinite(b)]]))
    return points, robust_accuracy_at(b, points)


def _median(values: npt.NDArray[np.float64], axis: int | None = None) -> Any:
    # "inverted_cdf": an actual data value (no averaging with inf): the smallest value at which
    # at least half of the examples are broken.
    return np.quantile(values, 0.5, axis=axis, method="inverted_cdf")


def security_summary(
    table: pd.DataFrame,
    eps_max: Mapping[str, float],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per (checkpoint, norm): median minimal norm with a bootstrap 95 % interval, and the AUC.

    Args:
        table: the min-norm table (:func:`min_norm_table`).
        eps_max: per norm, the epsilon up to which the area is taken (usually the grid's largest).
        bootstrap: resamples of the examples (percentile interval); ``seed`` makes it repeatable.

    Returns columns :data:`SUMMARY_COLUMNS`; ``median_norm`` is ``inf`` when fewer than half of the
    examples were broken by any attack, ``auc`` the mean robust accuracy over ``[0, eps_max]``.
    """
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(seed)
    for (checkpoint, norm), group in table.groupby(["checkpoint", "norm"], sort=False):
        b = group.sort_values("example")["best_norm"].to_numpy(np.float64)  # (N,)
        top = float(eps_max.get(str(norm), math.nan))
        idx = rng.integers(0, b.size, size=(bootstrap, b.size))  # (B, N)
        medians = _median(b[idx], axis=1)  # (B,)
        low, high = np.quantile(medians, [0.025, 0.975], method="inverted_cdf")
        auc = float(np.minimum(b, top).mean() / top) if math.isfinite(top) and top > 0 else math.nan
        rows.append(
            {
                "checkpoint": str(checkpoint),
                "norm": str(norm),
                "n": int(b.size),
                "clean_correct": int(group["clean_correct"].sum()),
                "found": int((group["clean_correct"] & np.isfinite(group["best_norm"])).sum()),
                "median_norm": float(_median(b)),
                "median_low": float(low),
                "median_high": float(high),
                "eps_max": top,
                "auc": auc,
                "bootstrap": int(bootstrap),
                "seed": int(seed),
            }
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
