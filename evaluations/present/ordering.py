"""Names and orders every figure and report section shares: norm labels, attack order, rows.

Matplotlib-free, so the report can use it without drawing anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd

from evaluations.record.metrics import WORST_CASE

#: display names of the norms, in display order (L∞ first)
NORM_LABEL = {"linf": "L∞", "l2": "L2", "l1": "L1"}
#: attacks in display order; the worst case last, unknown attacks just before it
ATTACK_ORDER = ("fgsm", "fgm", "pgd", "apgd", "cw", WORST_CASE)


def iter_rows(frame: pd.DataFrame) -> Iterator[Any]:
    """Rows as namedtuples, typed loosely (pandas types cell values as a broad scalar union)."""
    return iter(frame.itertuples(index=False))


def norm_label(norm: str) -> str:
    """``"L∞"`` for ``"linf"``, ``"L2"`` for ``"l2"``, ``"L1"`` for ``"l1"``; others unchanged."""
    return NORM_LABEL.get(norm, norm)


def norms_of(df: pd.DataFrame) -> list[str]:
    """The norms of a results table's ``norm`` column, L∞ first."""
    order = list(NORM_LABEL)
    return sorted(
        {str(n) for n in df["norm"].unique()},
        key=lambda n: (order.index(n) if n in order else len(order), n),
    )


def attack_rank(a: str) -> tuple[int, str]:
    """Sort key of an attack name in :data:`ATTACK_ORDER` (unknown names before the worst case)."""
    return (ATTACK_ORDER.index(a) if a in ATTACK_ORDER else len(ATTACK_ORDER) - 1, a)
