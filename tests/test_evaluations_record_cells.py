"""Tests for :mod:`evaluations.record.cells`: cell outcomes, their files and the worst case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluations.record.cells import (
    CELLS_DIR,
    CellOutcome,
    cell_paths,
    concat_or_none,
    load_cell,
    save_cell,
    sum_failed,
    worst_case,
)


def _cell(robust: list[list[int]], norms: list[list[float]], eps: list[float]) -> CellOutcome:
    r = np.asarray(robust, dtype=bool)
    return CellOutcome(
        epsilons=eps,
        clean_correct=np.array([True, True, True, False]),
        robust=r,
        norms=np.asarray(norms, dtype=np.float64),
        min_norm=None,
        seconds=1.5,
        grad_evals=7,
        params={},
    )


def test_worst_case_nested_ball_accumulation_and_min_norm() -> None:
    eps = [0.0, 0.1, 0.2]
    # Example 0: A breaks it only at eps 0.1 (not at 0.2: a weak attack) -> broken from 0.1 on.
    # Example 1: A breaks at 0.2 with norm 0.2, B at 0.2 with norm 0.15 -> 0.15.
    # Example 2: never broken. Example 3: clean-misclassified (broken everywhere, norm 0).
    a = _cell(
        [[1, 1, 1, 0], [0, 1, 1, 0], [1, 0, 1, 0]],
        [[0, 0, 0, 0], [0.1, 0.05, 0.1, 0], [0.2, 0.2, 0.2, 0]],
        eps,
    )
    b = _cell(
        [[1, 1, 1, 0], [1, 1, 1, 0], [1, 0, 1, 0]],
        [[0, 0, 0, 0], [0.08, 0.09, 0.1, 0], [0.12, 0.15, 0.2, 0]],
        eps,
    )
    wc = worst_case([a, b])
    np.testing.assert_array_equal(
        wc.robust, np.array([[1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 1, 0]], dtype=bool)
    )
    # Norm of the smallest perturbation that broke the example at or below eps_k (0 if never).
    np.testing.assert_allclose(
        wc.norms, [[0, 0, 0, 0], [0.1, 0, 0, 0], [0.1, 0.15, 0, 0]], rtol=0, atol=0
    )
    assert wc.robust.sum(axis=1).tolist() == [3, 2, 1]
    for c in (a, b):
        assert np.all(wc.robust.sum(axis=1) <= c.robust.sum(axis=1))
    np.testing.assert_array_equal(wc.clean_correct, a.clean_correct)
    assert wc.epsilons == eps and wc.min_norm is None
    assert wc.seconds == 3.0 and wc.grad_evals == 14


def test_worst_case_single_cell_is_made_monotone() -> None:
    eps = [0.0, 1.0, 2.0]
    c = _cell([[1, 1, 1, 0], [0, 1, 0, 0], [1, 1, 1, 0]], [[0] * 4, [1, 0, 1, 0], [0] * 4], eps)
    wc = worst_case([c])
    assert wc.robust.sum(axis=1).tolist() == [3, 1, 1]
    assert np.all(np.diff(wc.robust.sum(axis=1)) <= 0)


def test_worst_case_rejects_different_grids() -> None:
    a = _cell([[1, 1, 1, 0]] * 2, [[0] * 4] * 2, [0.0, 0.1])
    b = _cell([[1, 1, 1, 0]] * 2, [[0] * 4] * 2, [0.0, 0.2])
    with pytest.raises(ValueError, match="same epsilon grid"):
        worst_case([a, b])


# ----------------------------------------------------------------------------- cell files


def _full_cell() -> CellOutcome:
    cell = _cell([[1, 1, 1, 0], [0, 1, 1, 0]], [[0] * 4, [0.1, 0.05, 0.1, 0]], [0.0, 0.1])
    cell.min_norm = np.array([0.1, np.inf, 0.2, 0.0])
    cell.verify_failed = np.array([0, 1], dtype=np.int64)
    cell.black_box_broken = np.zeros((2, 4), dtype=bool)
    cell.params = {"steps": 5}
    return cell


def test_cell_files_round_trip(tmp_path: Path) -> None:
    cell = _full_cell()
    save_cell(tmp_path, "dense", "pgd@native", "fp1", cell)
    npz, meta = cell_paths(tmp_path, "dense", "pgd@native")
    assert npz == tmp_path / CELLS_DIR / "dense" / "pgd@native.npz" and meta.is_file()
    back = load_cell(tmp_path, "dense", "pgd@native", "fp1")
    assert back is not None
    assert back.epsilons == cell.epsilons and back.params == {"steps": 5}
    assert back.seconds == cell.seconds and back.grad_evals == cell.grad_evals
    for name in ("clean_correct", "robust", "norms", "min_norm", "verify_failed"):
        np.testing.assert_array_equal(getattr(back, name), getattr(cell, name))
    assert back.black_box_broken is not None and not back.black_box_broken.any()


def test_cell_with_another_fingerprint_or_unreadable_is_not_reused(tmp_path: Path) -> None:
    save_cell(tmp_path, "dense", "fgsm@native", "fp1", _full_cell())
    assert load_cell(tmp_path, "dense", "fgsm@native", "other") is None
    assert load_cell(tmp_path, "window70", "fgsm@native", "fp1") is None  # never written
    npz, meta = cell_paths(tmp_path, "dense", "fgsm@native")
    npz.write_bytes(b"not a zip file")
    assert json.loads(meta.read_text())["fingerprint"] == "fp1"
    assert load_cell(tmp_path, "dense", "fgsm@native", "fp1") is None


def test_sum_failed_and_concat_need_every_part() -> None:
    assert sum_failed([np.array([1, 0]), np.array([2, 3])]).tolist() == [3, 3]
    assert sum_failed([np.array([1, 0]), None]) is None
    assert sum_failed([]) is None
    parts = [np.zeros((2, 3), dtype=bool), np.ones((2, 1), dtype=bool)]
    joined = concat_or_none(parts)
    assert joined is not None and joined.shape == (2, 4)
    assert concat_or_none([parts[0], None]) is None
