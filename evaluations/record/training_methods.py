"""Results by training method (standard vs adversarial training, issue 12): matrix, warnings, curves.

The grid writes four optional columns per row from the checkpoint's recorded training threat model
(``adversarial_training`` in its metadata; checkpoints without it are standard-trained):

==============  =====  =====================================================================
column          type   meaning
==============  =====  =====================================================================
training        str    label: ``standard``, ``AT (linf 0.1, PGD-10)``, ``TRADES (...)``, ...
train_method    str    ``none`` / ``pgd`` / ``trades`` / ``fast`` / ``gaussian``
train_norm      str    training norm (empty for standard training; ``l2`` for ``gaussian``)
train_eps       float  training budget (0 for standard and ``gaussian`` training: no budget)
val_robust_last float  PGD robust validation accuracy of the last epoch (NaN: not recorded)
val_robust_best float  the best robust validation accuracy over the final-mask, full-budget epochs
best_robust_ep  int    the epoch of ``val_robust_best`` (``best-robust/``; -1: none)
==============  =====  =====================================================================

:func:`training_matrix` is the training-method x sparsity matrix of clean and worst-case robust
accuracy at each training budget; :func:`below_budget_warnings` flags adversarially trained models
whose grid never reaches their training budget (a robust accuracy measured only below it says
little about the model); :func:`evaluations.present.plots_training.plot_training_curves` draws worst-case robust accuracy vs epsilon,
one panel per training method.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from evaluations.record.metrics import WORST_CASE
from robustbench_sparse.adversarial import threat_label

__all__ = [
    "below_budget_warnings",
    "checkpoint_training",
    "has_training_methods",
    "robust_overfitting",
    "structure_key",
    "structure_label",
    "training_budgets",
    "training_matrix",
    "with_structure",
]

_COLUMNS = ("training", "train_method", "train_norm", "train_eps")
_NAN = float("nan")


def checkpoint_training(meta: dict[str, Any]) -> dict[str, Any]:
    """The four training columns of a checkpoint from its metadata (standard when unrecorded)."""

    rec = meta.get("adversarial_training") or {}
    method = str(rec.get("method", "none"))
    if method == "none":
        return {
            "training": "standard",
            "train_method": "none",
            "train_norm": "",
            "train_eps": 0.0,
            "val_robust_last": _NAN,
            "val_robust_best": _NAN,
            "best_robust_ep": -1,
        }
    norm, eps = str(rec.get("norm", "")), float(rec.get("eps", 0.0))
    label = rec.get("label") or threat_label(
        method, norm, eps, int(rec.get("steps", 0)), rec.get("trades_beta"), sigma=rec.get("sigma")
    )
    if method == "gaussian":  # noise for randomized smoothing: the L2 threat model, no budget
        norm, eps = "l2", 0.0
    history = [h for h in meta.get("history") or [] if h.get("val_robust_accuracy") is not None]
    # best-robust/'s rule: final masks and the full budget (no epoch of the eps warm-up)
    frozen = [
        h for h in history if h.get("masks_frozen", True) and float(h.get("adv_eps") or eps) >= eps
    ]
    best = max(frozen, key=lambda h: (h["val_robust_accuracy"], -h["epoch"]), default=None)
    return {
        "training": str(label),
        "train_method": method,
        "train_norm": norm,
        "train_eps": eps,
        "val_robust_last": float(history[-1]["val_robust_accuracy"]) if history else _NAN,
        "val_robust_best": float(best["val_robust_accuracy"]) if best else _NAN,
        "best_robust_ep": int(best["epoch"]) if best else -1,
    }


def has_training_methods(df: pd.DataFrame) -> bool:
    """True when the results hold at least one adversarially trained checkpoint."""
    return "train_method" in df.columns and bool(
        (df["train_method"].fillna("none") != "none").any()
    )


def structure_label(granularity: str, target: float) -> str:
    """``dense`` or ``<granularity>-<percent>`` (the model without its training method)."""
    if granularity == "dense" or float(target) == 0:
        return "dense"
    return f"{granularity}-{round(float(target) * 100):02d}"


def with_structure(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    defaults: tuple[Any, ...] = ("standard", "none", "", 0.0)
    for col, default in zip(_COLUMNS, defaults, strict=True):
        if col not in out.columns:
            out[col] = default
        out[col] = out[col].fillna(default)
    out["structure"] = [
        structure_label(str(g), float(t))
        for g, t in zip(out["granularity"], out["sparsity_target"], strict=True)
    ]
    return out


def training_budgets(df: pd.DataFrame) -> list[tuple[str, float]]:
    """Sorted distinct ``(norm, eps)`` training budgets of the adversarially trained models."""
    if not has_training_methods(df):
        return []
    at = df[(df["train_method"] != "none") & (df["train_eps"].astype(float) > 0)]
    return sorted(
        {(str(n), float(e)) for n, e in zip(at["train_norm"], at["train_eps"], strict=True)}
    )


def structure_key(s: str) -> tuple[int, str, int]:
    if s == "dense":
        return (0, "", 0)
    name, _, pct = s.rpartition("-")
    order = ("window", "channel", "combined", "unstructured")
    rank = order.index(name) + 1 if name in order else len(order) + 1
    return (rank, name, int(pct) if pct.isdigit() else 0)


def training_matrix(df: pd.DataFrame, norm: str, eps: float) -> pd.DataFrame | None:
    """Clean and worst-case robust accuracy at ``(norm, eps)``: rows training, columns structure.

    Each cell is a dict ``{"clean", "robust", "n"}`` (robust ``None`` where the checkpoint was not
    evaluated at ``eps``). Rows: ``standard`` first, then the training labels. ``None`` when no
    checkpoint was attacked under ``norm``.
    """
    data = with_structure(df)
    data = data[(data["attack"] == WORST_CASE) & (data["norm"] == norm)]
    if data.empty:
        return None
    cells: dict[str, dict[str, Any]] = {}
    for (training, structure), sub in data.groupby(["training", "structure"]):
        hit = sub[
            [math.isclose(float(e), eps, rel_tol=1e-9, abs_tol=1e-12) for e in sub["epsilon"]]
        ]
        first = sub.iloc[0]
        cells.setdefault(str(training), {})[str(structure)] = {
            "clean": float(first["clean_accuracy"]),
            "robust": float(hit.iloc[0]["robust_accuracy"]) if not hit.empty else None,
            "n": int(first["n"]),
        }
    rows = sorted(cells, key=lambda t: (t != "standard", t))
    cols = sorted({s for r in cells.values() for s in r}, key=structure_key)
    return pd.DataFrame([[cells[r].get(c) for c in cols] for r in rows], index=rows, columns=cols)


def robust_overfitting(df: pd.DataFrame) -> pd.DataFrame:
    """Per adversarially trained checkpoint: best vs last robust validation accuracy (Rice et al.).

    Columns: checkpoint, training, best_epoch, best, last, gap (best - last, >= 0). Empty when the
    results carry no adversarially trained checkpoint or no robust validation history.
    """
    cols = ["checkpoint", "training", "best_epoch", "best", "last", "gap"]
    if not has_training_methods(df) or "val_robust_best" not in df.columns:
        return pd.DataFrame(columns=cols)
    at = df[df["train_method"] != "none"].groupby("checkpoint", sort=True).first().reset_index()
    at = at[at["val_robust_best"].notna()]
    out = pd.DataFrame(
        {
            "checkpoint": at["checkpoint"],
            "training": at["training"],
            "best_epoch": at["best_robust_ep"].astype(int),
            "best": at["val_robust_best"].astype(float),
            "last": at["val_robust_last"].astype(float),
        }
    )
    out["gap"] = out["best"] - out["last"]
    return out.reset_index(drop=True)


def below_budget_warnings(df: pd.DataFrame) -> list[str]:
    """One line per adversarially trained checkpoint whose grid never reaches its training eps."""
    if not has_training_methods(df):
        return []
    out: list[str] = []
    at = df[(df["train_method"] != "none") & (df["train_eps"].astype(float) > 0)]  # no gaussian
    for ckpt, sub in at.groupby("checkpoint"):
        norm, eps = str(sub["train_norm"].iloc[0]), float(sub["train_eps"].iloc[0])
        same = sub[sub["norm"] == norm]
        top = float(same["epsilon"].max()) if not same.empty else None
        if top is None or top < eps * (1 - 1e-9):
            reached = "never attacked under " + norm if top is None else f"at most {top:g}"
            out.append(
                f"{ckpt} was trained at {norm} eps {eps:g} but evaluated only below it "
                f"({reached}): its robust accuracy at the training budget is not measured"
            )
    return out
