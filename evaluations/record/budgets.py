"""Which budgets discriminate, and what sparsity costs relative to dense at them.

A robustness report is only informative at budgets where models differ: at a tiny epsilon every
model is near its clean accuracy, at a large one every model is at 0 %. :func:`choose_budgets` picks,
per norm and from the data, the *anchor* budget where the reference model's (the dense baseline's;
the mean over checkpoints when there is none) worst-case robust accuracy is nearest 50 % -- where a
binomial proportion has the most room to move both ways -- plus its neighbours on the grid.
:func:`relative_to_dense` gives every sparse checkpoint's worst-case robust accuracy minus the dense
model's at those budgets, with a 95 % interval for the difference:

* **paired** (the default whenever the per-example outcomes in ``cells/`` are present): the same
  test examples are attacked for every checkpoint, so the difference is of *paired* proportions.
  Interval: Newcombe's hybrid score interval for paired data (Newcombe 1998, "Improved confidence
  intervals for the difference between binomial proportions based on paired data", Stat. Med.
  17:2635, method 10, without continuity correction), built from the two Wilson intervals and the
  phi correlation of the per-example outcomes. Deterministic (no resampling).
* **unpaired** (fallback from the counts alone): Newcombe's hybrid score interval for independent
  proportions (Newcombe 1998, Stat. Med. 17:873, method 10): the same formula with phi = 0. It is
  wider than the paired one when the outcomes are positively correlated, as they are here.

Differences are in *points of robust accuracy* (percentage points when multiplied by 100).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from attacks.params import format_epsilon
from evaluations.record.cells import CELLS_DIR, CellOutcome, worst_case
from evaluations.record.metrics import WORST_CASE, wilson_interval
from evaluations.record.results import white_box

__all__ = [
    "DENSE",
    "BudgetChoice",
    "choose_budgets",
    "newcombe_paired",
    "newcombe_unpaired",
    "relative_to_dense",
    "trimmed_max_epsilon",
]

logger = logging.getLogger(__name__)

DENSE = "dense"
TARGET_ACCURACY = 0.5


# --------------------------------------------------------------------------- epsilon formatting


# --------------------------------------------------------------------------- choosing budgets


@dataclass(frozen=True)
class BudgetChoice:
    """The discriminating budgets of one norm.

    ``anchor`` is the nonzero grid budget whose reference worst-case robust accuracy is nearest
    ``target``; ``epsilons`` is the anchor with its nonzero grid neighbours (ascending, at most 3).
    ``reason`` says why, in one sentence, for the report.
    """

    norm: str
    anchor: float
    epsilons: list[float]
    reference: str
    reference_accuracy: float
    grid: list[float]
    reason: str


def _is_dense_row(granularity: object, target: object) -> bool:
    return str(granularity) == DENSE or float(str(target)) == 0.0


def _dense_name(df: pd.DataFrame) -> str | None:
    dense = sorted(
        {
            str(c)
            for c, g, t in zip(
                df["checkpoint"], df["granularity"], df["sparsity_target"], strict=True
            )
            if _is_dense_row(g, t)
        }
    )
    return dense[0] if dense else None


def choose_budgets(df: pd.DataFrame, target: float = TARGET_ACCURACY) -> dict[str, BudgetChoice]:
    """Per norm, the budgets that discriminate between models (see the module docstring).

    ``df`` is a results table; only ``worst_case`` rows are used (a norm without them is skipped).
    Ties in the distance to ``target`` go to the smaller budget. Returns ``{norm: BudgetChoice}``.
    """
    wc = df[df["attack"] == WORST_CASE]
    out: dict[str, BudgetChoice] = {}
    dense = _dense_name(wc)
    for norm in sorted({str(n) for n in wc["norm"].unique()}):
        data = wc[wc["norm"] == norm]
        grid = sorted({float(e) for e in data["epsilon"]})
        nonzero = [e for e in grid if e > 0]
        if not nonzero:
            continue
        if dense is not None and (data["checkpoint"] == dense).any():
            ref = data[data["checkpoint"] == dense].groupby("epsilon")["robust_accuracy"].min()
            ref_name = dense
        else:
            ref = data.groupby("epsilon")["robust_accuracy"].mean()
            ref_name = "mean over checkpoints"
        acc = {float(str(e)): float(a) for e, a in ref.items()}
        anchor = min(nonzero, key=lambda e: (abs(acc.get(e, math.inf) - target), e))
        i = nonzero.index(anchor)
        chosen = nonzero[max(i - 1, 0) : i + 2]
        ref_acc = acc.get(anchor, math.nan)
        lab = format_epsilon(anchor, grid=grid)
        who = (
            f"the dense model's ({ref_name!r}) worst-case robust accuracy"
            if ref_name == dense
            else "the mean worst-case robust accuracy over the checkpoints (no dense model)"
        )
        reason = (
            f"ε = {lab} is the budget where {who} "
            f"({100 * ref_acc:.1f} %) is nearest {100 * target:.0f} %, where differences between "
            f"models can show in both directions; its grid neighbours "
            f"({', '.join(format_epsilon(e, grid=grid) for e in chosen if e != anchor) or 'none'}) "
            "show the trend. Smaller budgets leave every model near its clean accuracy, larger "
            "ones push every model towards 0 %."
        )
        out[norm] = BudgetChoice(norm, anchor, chosen, ref_name, ref_acc, grid, reason)
    return out


def trimmed_max_epsilon(curves: pd.DataFrame, floor: float = 0.0) -> float:
    """The smallest budget from which every curve in ``curves`` stays at or below ``floor``.

    ``curves`` holds ``epsilon`` and ``robust_accuracy`` columns (any number of curves); ``floor``
    is a fraction (0.01 = 1 %). Returns the grid maximum when no such budget exists. Beyond it the
    curves carry no information, so plots cut the axis there (keeping that one budget).
    """
    by_eps = curves.groupby("epsilon")["robust_accuracy"].max().sort_index()
    eps = [float(str(e)) for e in by_eps.index]
    acc = [float(a) for a in by_eps.to_numpy()]
    for i, e in enumerate(eps):
        if e > 0 and max(acc[i:]) <= floor:
            return e
    return eps[-1]


# --------------------------------------------------------------------------- difference intervals


def _phi(a: float, b: float, c: float, d: float) -> float:
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    return 0.0 if denom <= 0 else (a * d - b * c) / math.sqrt(denom)


def _hybrid(
    p1: float, l1: float, u1: float, p2: float, l2: float, u2: float, phi: float
) -> tuple[float, float]:
    theta = p1 - p2
    low = theta - math.sqrt(
        max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0)
    )
    high = theta + math.sqrt(
        max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0)
    )
    return max(low, -1.0), min(high, 1.0)


def newcombe_paired(first: np.ndarray, second: np.ndarray) -> tuple[float, float, float]:
    """Difference ``mean(first) - mean(second)`` of paired binary outcomes, with its 95 % interval.

    ``first``, ``second``: bool ``(N,)``, outcome of the same N examples under two conditions.
    Newcombe (1998, Stat. Med. 17:2635) method 10. Returns ``(difference, low, high)`` as fractions.
    Raises ``ValueError`` on shape mismatch or ``N == 0``.
    """
    x, y = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"paired outcomes need two equal 1-D shapes, got {x.shape} and {y.shape}")
    n = x.size
    a = float(np.sum(x & y))
    b = float(np.sum(x & ~y))
    c = float(np.sum(~x & y))
    d = float(n - a - b - c)
    l1, u1 = wilson_interval(a + b, n)
    l2, u2 = wilson_interval(a + c, n)
    p1, p2 = (a + b) / n, (a + c) / n
    low, high = _hybrid(p1, l1, u1, p2, l2, u2, _phi(a, b, c, d))
    return p1 - p2, low, high


def newcombe_unpaired(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float]:
    """Difference ``k1/n1 - k2/n2`` of independent proportions with its 95 % interval.

    Newcombe (1998, Stat. Med. 17:873) method 10 (hybrid score from two Wilson intervals).
    Returns ``(difference, low, high)`` as fractions. Raises ``ValueError`` when a count is invalid.
    """
    if n1 <= 0 or n2 <= 0:
        raise ValueError("newcombe_unpaired needs n1, n2 > 0")
    l1, u1 = wilson_interval(k1, n1)
    l2, u2 = wilson_interval(k2, n2)
    p1, p2 = k1 / n1, k2 / n2
    low, high = _hybrid(p1, l1, u1, p2, l2, u2, 0.0)
    return p1 - p2, low, high


# --------------------------------------------------------------------------- relative to dense


def _worst_case_outcomes(
    results_dir: Path, df: pd.DataFrame, checkpoint: str, norm: str
) -> tuple[list[float], np.ndarray] | None:
    """Per-example worst-case robustness ``(epsilons, robust (K, N))`` from the saved cells."""

    # White-box cells only (transfer rows join the worst case only when asked; then the recomputed
    # worst case does not reproduce the table and the interval falls back to unpaired).
    rows = white_box(
        df[(df["checkpoint"] == checkpoint) & (df["norm"] == norm) & (df["attack"] != WORST_CASE)]
    )
    cells = []
    for attack, backend in sorted(
        {(str(a), str(b)) for a, b in zip(rows["attack"], rows["backend"], strict=True)}
    ):
        npz = results_dir / CELLS_DIR / checkpoint / f"{attack}@{backend}.npz"
        meta = npz.with_suffix(".json")
        if not (npz.is_file() and meta.is_file()):
            return None
        try:
            with np.load(npz) as z:
                cells.append(
                    CellOutcome(
                        epsilons=[float(e) for e in z["epsilons"]],
                        clean_correct=z["clean_correct"].astype(bool),
                        robust=z["robust"].astype(bool),
                        norms=z["norms"],
                        min_norm=None,
                        seconds=0.0,
                        grad_evals=0,
                        params=json.loads(meta.read_text()).get("params", {}),
                    )
                )
        except (OSError, ValueError, KeyError):
            return None
    if not cells:
        return None
    try:
        wc = worst_case(cells)
    except ValueError:
        return None
    return wc.epsilons, wc.robust


def relative_to_dense(
    df: pd.DataFrame,
    budgets: dict[str, BudgetChoice],
    results_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Worst-case robust accuracy of each sparse checkpoint minus dense at the chosen budgets.

    Paired intervals from the per-example outcomes under ``results_dir/cells`` when they exist and
    reproduce the table's counts exactly (otherwise unpaired, from the counts; the ``interval``
    column says which). One row per (norm, epsilon, sparse checkpoint) with columns ``norm,
    epsilon, anchor, checkpoint, granularity, sparsity_target, sparsity_achieved, robust_accuracy,
    dense_accuracy, difference, low, high, interval`` (fractions). Empty when there is no dense
    checkpoint.
    """
    wc = df[df["attack"] == WORST_CASE]
    dense = _dense_name(wc)
    columns = [
        "norm", "epsilon", "anchor", "checkpoint", "granularity", "sparsity_target",
        "sparsity_achieved", "robust_accuracy", "dense_accuracy", "difference", "low", "high",
        "interval",
    ]  # fmt: skip
    if dense is None:
        return pd.DataFrame(columns=columns)
    root = Path(results_dir) if results_dir is not None else None
    cache: dict[tuple[str, str], tuple[list[float], np.ndarray] | None] = {}

    def outcomes(name: str, norm: str) -> tuple[list[float], np.ndarray] | None:
        if root is None:
            return None
        if (name, norm) not in cache:
            cache[(name, norm)] = _worst_case_outcomes(root, df, name, norm)
        return cache[(name, norm)]

    rows = []
    for norm, choice in budgets.items():
        data = wc[wc["norm"] == norm]
        for eps in choice.epsilons:
            at = data[np.isclose(data["epsilon"].to_numpy(float), eps, rtol=1e-9, atol=0)]
            ref = at[at["checkpoint"] == dense]
            if ref.empty:
                continue
            r0 = ref.iloc[0]
            for r in at.itertuples(index=False):
                if str(r.checkpoint) == dense or _is_dense_row(r.granularity, r.sparsity_target):
                    continue
                diff = low = high = math.nan
                kind = "unpaired (Newcombe, counts)"
                od, os_ = outcomes(dense, norm), outcomes(str(r.checkpoint), norm)
                if od is not None and os_ is not None and eps in od[0] and eps in os_[0]:
                    xd = od[1][od[0].index(eps)]
                    xs = os_[1][os_[0].index(eps)]
                    if (
                        xd.shape == xs.shape
                        and int(xd.sum()) == int(r0.robust_correct)
                        and int(xs.sum()) == int(r.robust_correct)
                    ):
                        diff, low, high = newcombe_paired(xs, xd)
                        kind = "paired (Newcombe, same examples)"
                    else:
                        logger.warning(
                            "per-example outcomes of %s / %s do not reproduce the table at eps %g; "
                            "using the unpaired interval",
                            r.checkpoint,
                            dense,
                            eps,
                        )
                if kind.startswith("unpaired"):
                    diff, low, high = newcombe_unpaired(
                        int(r.robust_correct), int(r.n), int(r0.robust_correct), int(r0.n)
                    )
                rows.append(
                    [
                        norm, float(eps), float(eps) == choice.anchor, str(r.checkpoint),
                        str(r.granularity), float(r.sparsity_target), float(r.sparsity_achieved),
                        float(r.robust_accuracy), float(r0.robust_accuracy), diff, low, high, kind,
                    ]
                )  # fmt: skip
    return pd.DataFrame(rows, columns=columns)
