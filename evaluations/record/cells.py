"""Cells: the per-example record of one (checkpoint, attack) pair, its files and its worst case.

A cell is what the grid engine produces and what the record keeps: per example whether it was
clean-correct, whether it stayed robust at each epsilon ``(K, N)``, the norm of the perturbation
found, and the work it cost. Cells are stored under ``<results>/cells/<checkpoint>/<attack>@<backend>``
(``.npz`` arrays + ``.json`` metadata, the JSON written last) so a re-run reuses finished work and
the report can recompute paired comparisons from per-example outcomes.
"""

from __future__ import annotations

import io
import json
import logging
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attacks import AttackKind
from evaluations.record.adversarials import KeptAdversarials
from evaluations.record.metrics import summarize_cell
from evaluations.record.training_methods import checkpoint_training
from robustbench_sparse.atomic import atomic_path, atomic_write_text
from robustbench_sparse.checkpoint import LoadedCheckpoint

logger = logging.getLogger(__name__)

CELLS_DIR = "cells"


@dataclass
class CellOutcome:
    """Per-example outcome of one (checkpoint, attack) cell."""

    epsilons: list[float]
    clean_correct: np.ndarray  # bool (N,)
    robust: np.ndarray  # bool (K, N)
    norms: np.ndarray  # float (K, N)
    min_norm: np.ndarray | None  # float (N,)
    seconds: float
    grad_evals: int
    params: dict[str, Any]
    # int (K,): adversarials the attack returned that failed verification (None: not recorded)
    verify_failed: np.ndarray | None = None
    # bool (K, N): broken by a gradient-free stage of a cascade (e.g. AutoAttack's Square) that
    # every earlier, white-box stage left robust; None for single attacks (masking check 2)
    black_box_broken: np.ndarray | None = None
    # the verified adversarials, kept in memory when asked (--save-adversarials, transfer);
    # never part of the cell files (they go to evaluations.record.adversarials)
    adversarials: KeptAdversarials | None = None


#: a cell whose failed verifications exceed this fraction of its examples (at some epsilon) is
#: marked ``unreliable``: its attack misbehaved (NaN iterates, points outside the ball), so its
#: robust accuracy is an overestimate of unknown size
UNRELIABLE_VERIFY_FRACTION = 0.01


def sum_failed(counts: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """Element-wise sum of (K,) failed-verification counts; None if any is unknown."""
    if not counts or any(c is None for c in counts):
        return None
    return np.sum([c for c in counts if c is not None], axis=0).astype(np.int64)


def worst_case(cells: Sequence[CellOutcome]) -> CellOutcome:
    """Per-example worst case over cells of one norm (same epsilon grid), nested over epsilon."""
    eps = cells[0].epsilons
    for c in cells[1:]:
        if c.epsilons != eps:
            raise ValueError("worst case needs the same epsilon grid for every attack")
    robust = np.logical_and.reduce([c.robust for c in cells])  # (K, N)
    # Nested balls: broken at eps_j implies broken at every eps_k >= eps_j.
    robust = np.logical_and.accumulate(robust, axis=0)
    # Norm of the smallest perturbation that breaks the example at or below eps_k.
    big = np.full_like(cells[0].norms, np.inf)
    broken_norms = np.minimum.reduce([np.where(~c.robust, c.norms, big) for c in cells])  # (K, N)
    broken_norms = np.minimum.accumulate(broken_norms, axis=0)
    return CellOutcome(
        epsilons=list(eps),
        clean_correct=cells[0].clean_correct,
        robust=robust,
        norms=np.where(np.isfinite(broken_norms), broken_norms, 0.0),
        min_norm=None,
        seconds=sum(c.seconds for c in cells),
        grad_evals=sum(c.grad_evals for c in cells),
        params={"over": "all attacks of this norm"},
        verify_failed=sum_failed([c.verify_failed for c in cells]),
    )


def concat_or_none(parts: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """Concatenate (K, B_i) parts along examples; None if any part is None."""
    if not parts or any(p is None for p in parts):
        return None
    return np.concatenate([p for p in parts if p is not None], axis=1)


def cell_rows(
    ckpt: LoadedCheckpoint,
    attack: str,
    backend: str,
    norm: str,
    cell: CellOutcome,
    *,
    transfer_from: str | None = None,
) -> list[dict[str, Any]]:
    """The results rows of one cell (one per epsilon; schema in :mod:`evaluations.record.results`).

    ``transfer_from`` names the checkpoint whose adversarials were scored (a transfer cell,
    :mod:`evaluations.engine.transfer`); it fills the ``transfer_from`` column, which white-box
    rows leave empty.
    """
    rows = summarize_cell(cell.epsilons, cell.clean_correct, cell.robust, cell.norms)
    ident = {
        "checkpoint": ckpt.name,
        "arch": str(ckpt.meta.get("arch")),
        "dataset": ckpt.info.name,
        "granularity": ckpt.granularity,
        "sparsity_target": ckpt.sparsity_target,
        "sparsity_achieved": ckpt.sparsity_achieved,
        "attack": attack,
        "backend": backend,
        "norm": norm,
        # training, train_method, train_norm, train_eps (evaluations.record.training_methods)
        **checkpoint_training(ckpt.meta),
    }
    per_row = cell.seconds / max(len(rows), 1)
    params = json.dumps(cell.params, sort_keys=True, default=str)
    failed = cell.verify_failed
    # Unreliable: too many returned points failed verification at some epsilon of the cell.
    unreliable = bool(
        failed is not None
        and failed.max(initial=0) > UNRELIABLE_VERIFY_FRACTION * len(cell.clean_correct)
    )
    return [
        {
            **ident,
            **r,
            "seconds": per_row,
            "params": params,
            "grad_evals": cell.grad_evals,
            "verify_failed": int(failed[k]) if failed is not None else math.nan,
            "unreliable": unreliable,
            **({"transfer_from": transfer_from} if transfer_from is not None else {}),
        }
        for k, r in enumerate(rows)
    ]


@dataclass(frozen=True)
class CellRecord:
    """One finished (checkpoint, attack) cell with what the masking checks need to know about it."""

    checkpoint: str
    attack: str
    backend: str
    norm: str
    kind: AttackKind
    gradient_free: bool  # the attack never uses gradients (class attribute ``gradient_free``)
    outcome: CellOutcome


def cell_paths(out_dir: Path, ckpt_name: str, label: str) -> tuple[Path, Path]:
    base = out_dir / CELLS_DIR / ckpt_name
    return base / f"{label}.npz", base / f"{label}.json"


def load_cell(out_dir: Path, ckpt_name: str, label: str, fingerprint: str) -> CellOutcome | None:
    npz_path, json_path = cell_paths(out_dir, ckpt_name, label)
    if not (npz_path.is_file() and json_path.is_file()):
        return None
    try:
        meta = json.loads(json_path.read_text())
        if meta.get("fingerprint") != fingerprint:
            return None
        with np.load(npz_path) as z:
            return CellOutcome(
                epsilons=[float(e) for e in z["epsilons"]],
                clean_correct=z["clean_correct"].astype(bool),
                robust=z["robust"].astype(bool),
                norms=z["norms"],
                min_norm=z["min_norm"] if "min_norm" in z.files else None,
                verify_failed=z["verify_failed"] if "verify_failed" in z.files else None,
                black_box_broken=z["black_box_broken"] if "black_box_broken" in z.files else None,
                seconds=float(meta["seconds"]),
                grad_evals=int(meta["grad_evals"]),
                params=dict(meta["params"]),
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        logger.warning("ignoring unreadable cell %s; recomputing it", npz_path)
        return None


def save_cell(
    out_dir: Path, ckpt_name: str, label: str, fingerprint: str, cell: CellOutcome
) -> None:
    npz_path, json_path = cell_paths(out_dir, ckpt_name, label)
    arrays: dict[str, np.ndarray] = {
        "epsilons": np.asarray(cell.epsilons, dtype=np.float64),
        "clean_correct": cell.clean_correct,
        "robust": cell.robust,
        "norms": cell.norms,
    }
    if cell.min_norm is not None:
        arrays["min_norm"] = cell.min_norm
    if cell.verify_failed is not None:
        arrays["verify_failed"] = cell.verify_failed
    if cell.black_box_broken is not None:
        arrays["black_box_broken"] = cell.black_box_broken
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    with atomic_path(npz_path) as tmp:
        tmp.write_bytes(buf.getvalue())
    meta = {
        "fingerprint": fingerprint,
        "seconds": cell.seconds,
        "grad_evals": cell.grad_evals,
        "params": cell.params,
    }
    # The JSON is written last: a cell counts as finished only when both files agree.
    atomic_write_text(json_path, json.dumps(meta, indent=2, default=str) + "\n")
