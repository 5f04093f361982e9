"""Tests for :mod:`evaluations.present.ordering`: the names and orders figures and report share."""

from __future__ import annotations

import pandas as pd

from evaluations.present.ordering import (
    ATTACK_ORDER,
    attack_rank,
    iter_rows,
    norm_label,
    norms_of,
)
from evaluations.record.metrics import WORST_CASE


def test_norms_come_linf_first_then_unknown_by_name() -> None:
    df = pd.DataFrame({"norm": ["l2", "zeta", "linf", "l2", "alpha"]})
    assert norms_of(df) == ["linf", "l2", "alpha", "zeta"]
    assert norm_label("linf") == "L∞" and norm_label("l2") == "L2" and norm_label("l1") == "L1"
    assert norm_label("l0") == "l0"  # an unknown norm keeps its name


def test_attacks_sort_in_display_order_with_the_worst_case_last() -> None:
    names = [WORST_CASE, "cw", "square", "fgsm", "pgd", "apgd"]
    assert sorted(names, key=attack_rank) == ["fgsm", "pgd", "apgd", "cw", "square", WORST_CASE]
    assert ATTACK_ORDER[-1] == WORST_CASE


def test_iter_rows_gives_named_rows() -> None:
    rows = list(iter_rows(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})))
    assert [(r.a, r.b) for r in rows] == [(1, "x"), (2, "y")]
