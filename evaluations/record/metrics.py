"""Robustness metrics: Wilson intervals, per-cell summaries, curve AUCs and result invariants.

Everything here is pure numpy/pandas (no torch), so it can be tested on synthetic arrays and reused by
plots and the report.

Conventions (the results schema is described in :mod:`evaluations.record.results`):

* ``robust[k, i]`` is True when example ``i`` is still classified correctly after the attack at
  ``epsilons[k]``. Clean-misclassified examples count as attacked successfully at every epsilon
  (perturbation 0), so ``robust`` implies ``clean_correct``.
* Counts are primary and ratios are derived from them; comparisons between rows use counts, so they are
  exact.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np
import numpy.typing as npt
import pandas as pd

from attacks.params import format_epsilon
from evaluations.record.results import white_box

__all__ = [
    "WORST_CASE",
    "Z_95",
    "check_invariants",
    "pgd_vs_fgsm",
    "robustness_auc",
    "robustness_auc_table",
    "summarize_cell",
    "wilson_interval",
]

logger = logging.getLogger(__name__)

#: Name of the per-example worst case over all attacks of one norm.
WORST_CASE = "worst_case"
#: Two-sided 95 % normal quantile.
Z_95 = 1.959963984540054

_MAX_LISTED = 5  # violations spelled out in a check's detail


def _rows(frame: pd.DataFrame) -> Iterator[Any]:
    """Rows as namedtuples, typed loosely (pandas types cell values as a broad scalar union)."""
    return iter(frame.itertuples(index=False))


# --------------------------------------------------------------------------- Wilson interval


@overload
def wilson_interval(  # type: ignore[overload-overlap]
    successes: float, n: float, z: float = Z_95
) -> tuple[float, float]: ...


@overload
def wilson_interval(
    successes: npt.ArrayLike, n: npt.ArrayLike, z: float = Z_95
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...


def wilson_interval(successes: Any, n: Any, z: float = Z_95) -> tuple[Any, Any]:
    """Wilson score interval for a binomial proportion ``successes / n``.

    Vectorized: ``successes`` and ``n`` broadcast against each other. Two scalars give a pair of
    floats, anything else a pair of float arrays. Where ``n == 0`` both bounds are NaN. The bounds are
    exactly 0 for ``successes == 0`` and exactly 1 for ``successes == n``.

    >>> low, high = wilson_interval(8, 10)
    >>> round(low, 4), round(high, 4)
    (0.4902, 0.9433)
    """
    s_arr = np.asarray(successes, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    scalar = s_arr.ndim == 0 and n_arr.ndim == 0
    s_arr, n_arr = np.broadcast_arrays(s_arr, n_arr)
    if np.any(n_arr < 0) or np.any(s_arr < 0) or np.any(s_arr > np.where(n_arr > 0, n_arr, np.inf)):
        raise ValueError("wilson_interval needs 0 <= successes <= n and n >= 0")
    valid = n_arr > 0
    safe_n = np.where(valid, n_arr, 1.0)
    z2 = z * z
    p = s_arr / safe_n
    denom = 1.0 + z2 / safe_n
    centre = (p + z2 / (2.0 * safe_n)) / denom
    half = z * np.sqrt(p * (1.0 - p) / safe_n + z2 / (4.0 * safe_n * safe_n)) / denom
    low = np.clip(centre - half, 0.0, 1.0)
    high = np.clip(centre + half, 0.0, 1.0)
    low = np.where(s_arr == 0, 0.0, low)
    high = np.where(s_arr == n_arr, 1.0, high)
    low = np.where(valid, low, np.nan)
    high = np.where(valid, high, np.nan)
    if scalar:
        return float(low), float(high)
    return low.astype(np.float64), high.astype(np.float64)


# --------------------------------------------------------------------------- curves


def robustness_auc(eps: npt.ArrayLike, acc: npt.ArrayLike) -> float:
    """Area under robust accuracy vs epsilon (trapezoid rule), divided by the epsilon range.

    The result is the mean robust accuracy over ``[min(eps), max(eps)]`` and lies in ``[0, 1]`` for
    accuracies in ``[0, 1]``. Points are sorted by epsilon; NaN accuracies are dropped. A single
    epsilon (zero range) gives that point's accuracy; no points give NaN.
    """
    e = np.asarray(eps, dtype=np.float64).ravel()
    a = np.asarray(acc, dtype=np.float64).ravel()
    if e.shape != a.shape:
        raise ValueError(f"eps and acc differ in length: {e.shape[0]} vs {a.shape[0]}")
    keep = np.isfinite(e) & np.isfinite(a)
    e, a = e[keep], a[keep]
    if e.size == 0:
        return math.nan
    order = np.argsort(e, kind="stable")
    e, a = e[order], a[order]
    width = float(e[-1] - e[0])
    if width == 0.0:
        return float(np.mean(a))
    area = float(np.sum((e[1:] - e[:-1]) * (a[1:] + a[:-1]) / 2.0))
    return area / width


def robustness_auc_table(df: pd.DataFrame, attacks: Sequence[str] | None = None) -> pd.DataFrame:
    """AUC of each robustness curve: one row per (checkpoint, attack, backend, norm).

    Columns: ``checkpoint, attack, backend, norm, eps_min, eps_max, auc``. ``attacks`` restricts the
    attacks (default: all).
    """
    cols = ["checkpoint", "attack", "backend", "norm", "eps_min", "eps_max", "auc"]
    data = df if attacks is None else df[df["attack"].isin(list(attacks))]
    rows: list[dict[str, Any]] = []
    for key, group in data.groupby(["checkpoint", "attack", "backend", "norm"], sort=False):
        checkpoint, attack, backend, norm = (str(k) for k in key)
        rows.append(
            {
                "checkpoint": checkpoint,
                "attack": attack,
                "backend": backend,
                "norm": norm,
                "eps_min": float(group["epsilon"].min()),
                "eps_max": float(group["epsilon"].max()),
                "auc": robustness_auc(group["epsilon"], group["robust_accuracy"]),
            }
        )
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- per-cell summary


def summarize_cell(
    epsilons: Sequence[float] | npt.ArrayLike,
    clean_correct: npt.ArrayLike,
    robust: npt.ArrayLike,
    norms: npt.ArrayLike | None = None,
) -> list[dict[str, Any]]:
    """Summarize one (checkpoint, attack) cell into one row dict per epsilon.

    Args:
        epsilons: the ``K`` budgets, in the order of the rows of ``robust``.
        clean_correct: bool ``(N,)``, example classified correctly without attack.
        robust: bool ``(K, N)``, example still classified correctly at ``epsilons[k]``.
        norms: float ``(K, N)``, perturbation norm of the adversarial returned at ``epsilons[k]``
            (``None``: ``median_norm`` is NaN).

    Returns:
        ``K`` dicts with keys ``epsilon, n, clean_correct, robust_correct, clean_accuracy,
        robust_accuracy, robust_accuracy_low, robust_accuracy_high, success_rate, median_norm``
        (plain Python ints and floats). ``success_rate`` is the fraction of clean-correct examples
        the attack flipped (NaN if none is clean-correct); ``median_norm`` is the median perturbation
        norm of those successful adversarials (NaN if there are none).
    """
    eps = np.asarray(epsilons, dtype=np.float64).ravel()
    clean = np.asarray(clean_correct).astype(bool).ravel()  # (N,)
    rob = np.asarray(robust).astype(bool)  # (K, N)
    if rob.ndim == 1 and eps.size == 1:
        rob = rob[None, :]
    n = clean.shape[0]
    if rob.shape != (eps.size, n):
        raise ValueError(
            f"robust must have shape (K, N) = ({eps.size}, {n}), got {tuple(rob.shape)}"
        )
    nrm: npt.NDArray[np.float64] | None = None
    if norms is not None:
        nrm = np.asarray(norms, dtype=np.float64)  # (K, N)
        if nrm.shape != rob.shape:
            raise ValueError(f"norms must have shape {tuple(rob.shape)}, got {tuple(nrm.shape)}")
    inconsistent = int(np.sum(rob & ~clean[None, :]))
    if inconsistent:
        logger.warning(
            "%d (epsilon, example) pairs are robust but clean-misclassified; the attack's "
            "predictions disagree with the clean pass (check eval mode / determinism)",
            inconsistent,
        )

    clean_count = int(clean.sum())
    robust_counts = rob.sum(axis=1).astype(np.int64)  # (K,)
    low, high = wilson_interval(robust_counts, np.full_like(robust_counts, n))
    rows: list[dict[str, Any]] = []
    for k in range(eps.size):
        robust_count = int(robust_counts[k])
        flipped = clean & ~rob[k]  # (N,) successful attacks on clean-correct examples
        median_norm = math.nan
        if nrm is not None and flipped.any():
            values = nrm[k][flipped]
            values = values[np.isfinite(values)]
            if values.size:
                median_norm = float(np.median(values))
        rows.append(
            {
                "epsilon": float(eps[k]),
                "n": n,
                "clean_correct": clean_count,
                "robust_correct": robust_count,
                "clean_accuracy": clean_count / n if n else math.nan,
                "robust_accuracy": robust_count / n if n else math.nan,
                "robust_accuracy_low": float(low[k]),
                "robust_accuracy_high": float(high[k]),
                "success_rate": (
                    (clean_count - robust_count) / clean_count if clean_count else math.nan
                ),
                "median_norm": median_norm,
            }
        )
    return rows


# --------------------------------------------------------------------------- invariants


def _check(passed: bool, detail: str) -> dict[str, Any]:
    return {"passed": bool(passed), "detail": detail}


def _listing(items: list[str]) -> str:
    shown = "; ".join(items[:_MAX_LISTED])
    more = f"; … and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return shown + more


def _check_eps0(df: pd.DataFrame) -> dict[str, Any]:
    zero = df[df["epsilon"] == 0]
    if zero.empty:
        return _check(True, "no epsilon = 0 rows; nothing to check")
    bad = zero[
        (zero["robust_correct"].astype(np.int64) != zero["clean_correct"].astype(np.int64))
        | (zero["n"].astype(np.int64) <= 0)
    ]
    if bad.empty:
        return _check(
            True, f"robust accuracy equals clean accuracy at epsilon = 0 in all {len(zero)} rows"
        )
    items = [
        f"{r.checkpoint}/{r.attack}/{r.backend}/{r.norm}: robust {int(r.robust_correct)} "
        f"vs clean {int(r.clean_correct)} of {int(r.n)}"
        for r in _rows(bad)
    ]
    return _check(False, f"{len(bad)} of {len(zero)} rows differ: " + _listing(items))


def _check_monotone(df: pd.DataFrame) -> dict[str, Any]:
    wc = df[df["attack"] == WORST_CASE]
    if wc.empty:
        return _check(True, f"no {WORST_CASE} rows; nothing to check")
    items: list[str] = []
    curves = 0
    for key, group in wc.groupby(["checkpoint", "norm", "backend"], sort=False):
        curves += 1
        g = group.sort_values("epsilon", kind="stable")
        same_n = g["n"].nunique() == 1
        values = (g["robust_correct"] if same_n else g["robust_accuracy"]).to_numpy(np.float64)
        eps = g["epsilon"].to_numpy(np.float64)
        for i in np.flatnonzero(np.diff(values) > 0):
            items.append(
                f"{key[0]}/{key[1]}: {values[i]:g} at eps {format_epsilon(eps[i], style='decimal')} -> "
                f"{values[i + 1]:g} at eps {format_epsilon(eps[i + 1], style='decimal')}"
            )
    if not items:
        return _check(
            True, f"{WORST_CASE} robust accuracy is non-increasing in all {curves} curves"
        )
    return _check(False, f"{len(items)} increases: " + _listing(items))


def _check_worst_le_each(df: pd.DataFrame) -> dict[str, Any]:
    wc = df[df["attack"] == WORST_CASE]
    # Transfer rows are not compared: the worst case leaves them out unless asked.
    single = white_box(df[df["attack"] != WORST_CASE])
    if wc.empty or single.empty:
        return _check(True, f"no {WORST_CASE} rows or no single-attack rows; nothing to check")
    keys = ["checkpoint", "norm", "epsilon"]
    left = wc[[*keys, "n", "robust_correct", "robust_accuracy"]]
    right = single[[*keys, "attack", "backend", "n", "robust_correct", "robust_accuracy"]]
    merged = left.merge(right, on=keys, suffixes=("_wc", "_att"))
    if merged.empty:
        return _check(
            True, f"no single-attack rows share (checkpoint, norm, epsilon) with {WORST_CASE}"
        )
    same_n = merged["n_wc"].to_numpy() == merged["n_att"].to_numpy()
    by_count = merged["robust_correct_wc"].to_numpy(np.int64) > merged[
        "robust_correct_att"
    ].to_numpy(np.int64)
    by_ratio = (
        merged["robust_accuracy_wc"].to_numpy(np.float64)
        > merged["robust_accuracy_att"].to_numpy(np.float64) + 1e-12
    )
    bad = merged[np.where(same_n, by_count, by_ratio)]
    if bad.empty:
        return _check(True, f"{WORST_CASE} <= every single attack in all {len(merged)} comparisons")
    items = [
        f"{r.checkpoint}/{r.norm} eps {format_epsilon(r.epsilon, style='decimal')}: {WORST_CASE} "
        f"{int(r.robust_correct_wc)} > {r.attack}/{r.backend} {int(r.robust_correct_att)}"
        for r in _rows(bad)
    ]
    return _check(False, f"{len(bad)} of {len(merged)} comparisons violated: " + _listing(items))


def check_invariants(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Named consistency checks on a results frame, each ``{"passed": bool, "detail": str}``.

    * ``eps0_robust_equals_clean``: at epsilon 0 every (checkpoint, attack, backend, norm) row has
      ``robust_correct == clean_correct``.
    * ``worst_case_monotone``: the worst-case robust accuracy is non-increasing in epsilon per
      (checkpoint, norm) (counts compared exactly when ``n`` is constant).
    * ``worst_case_le_each_attack``: the worst case is at most every single attack's robust count at
      the same (checkpoint, norm, epsilon) (white-box attacks; transfer rows are not compared).

    The result is JSON-safe (it goes into ``results.json``). A check without data passes and says so.
    """
    checks = {
        "eps0_robust_equals_clean": _check_eps0(df),
        "worst_case_monotone": _check_monotone(df),
        "worst_case_le_each_attack": _check_worst_le_each(df),
    }
    for name, result in checks.items():
        if not result["passed"]:
            logger.warning("invariant %s failed: %s", name, result["detail"])
    return checks


def pgd_vs_fgsm(
    df: pd.DataFrame,
    tolerance_points: float = 1.0,
    *,
    pgd: str = "pgd",
    fgsm: str = "fgsm",
) -> dict[str, Any]:
    """Sanity check (reported, not enforced): PGD should be at least as strong as FGSM.

    For each (checkpoint, norm, epsilon) holding both attacks (any backends), PGD robust accuracy must
    not exceed FGSM robust accuracy by more than ``tolerance_points`` percentage points. A PGD weaker
    than FGSM usually means a too-small step size or too few iterations at large epsilon.

    Returns a JSON-safe dict: ``passed``, ``detail``, ``tolerance_points``, ``comparisons`` and
    ``violations`` (list of dicts with checkpoint, norm, epsilon, backends, both accuracies in points
    and the excess).
    """
    keys = ["checkpoint", "norm", "epsilon"]
    cols = [*keys, "backend", "robust_accuracy"]
    a = df.loc[df["attack"] == pgd, cols]
    b = df.loc[df["attack"] == fgsm, cols]
    merged = a.merge(b, on=keys, suffixes=("_pgd", "_fgsm"))
    result: dict[str, Any] = {
        "passed": True,
        "detail": "",
        "tolerance_points": float(tolerance_points),
        "comparisons": len(merged),
        "violations": [],
    }
    if merged.empty:
        result["detail"] = f"no (checkpoint, norm, epsilon) has both {pgd!r} and {fgsm!r} rows"
        return result
    excess = 100.0 * (merged["robust_accuracy_pgd"] - merged["robust_accuracy_fgsm"])
    bad = merged[excess > tolerance_points + 1e-9]
    violations: list[dict[str, Any]] = [
        {
            "checkpoint": str(r.checkpoint),
            "norm": str(r.norm),
            "epsilon": float(r.epsilon),
            "pgd_backend": str(r.backend_pgd),
            "fgsm_backend": str(r.backend_fgsm),
            "pgd_robust_accuracy_points": round(100.0 * float(r.robust_accuracy_pgd), 4),
            "fgsm_robust_accuracy_points": round(100.0 * float(r.robust_accuracy_fgsm), 4),
            "excess_points": round(
                100.0 * (float(r.robust_accuracy_pgd) - float(r.robust_accuracy_fgsm)), 4
            ),
        }
        for r in _rows(bad)
    ]
    result["violations"] = violations
    result["passed"] = not violations
    if violations:
        items = [
            f"{v['checkpoint']}/{v['norm']} eps {format_epsilon(v['epsilon'], style='decimal')}: PGD "
            f"{v['pgd_robust_accuracy_points']:.1f} vs FGSM {v['fgsm_robust_accuracy_points']:.1f}"
            for v in violations
        ]
        result["detail"] = (
            f"PGD weaker than FGSM by more than {tolerance_points:g} points in "
            f"{len(violations)} of {len(merged)} comparisons: " + _listing(items)
        )
        logger.warning("PGD vs FGSM check: %s", result["detail"])
    else:
        result["detail"] = (
            f"PGD robust accuracy <= FGSM + {tolerance_points:g} points in all "
            f"{len(merged)} comparisons"
        )
    return result
