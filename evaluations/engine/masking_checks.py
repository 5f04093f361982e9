"""Gradient-masking checks as pure functions of per-example outcomes: flags, never numbers.

Each check reads what the grid (and the probes of :mod:`evaluations.engine.masking_probes`)
observed and returns ``{"flagged": bool | None, "detail": str, ...}``; ``None`` means the
check could not run. See :mod:`evaluations.engine.masking` for the six checks and their sources.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from evaluations.engine.protocols import (
    PROTOCOLS,
    STANDARD_ATTACKS,
)
from evaluations.record.cells import CellRecord
from evaluations.record.metrics import WORST_CASE, wilson_interval

#: Fraction of examples above which checks 1-3 flag.
TOLERANCE = 0.01
CHECKS = (
    "unbounded_budget",
    "black_box_beats_white_box",
    "zero_gradients",
    "randomness",
    "not_converged",
    "batch_dependence",
)

#: Logit change, relative to the largest logit (at least 1), above which an example's output counts
#: as batch-dependent: far above float32 kernels that reorder sums with the batch size (~1e-6),
#: far below what batch statistics do (order 1).
BATCH_RTOL = 1e-3


THOROUGH_EXTRA = frozenset(a.name for a in PROTOCOLS["thorough"].attacks) - STANDARD_ATTACKS


def _entry(flagged: bool | None, detail: str, **extra: Any) -> dict[str, Any]:
    return {"flagged": flagged, "detail": detail, **extra}


def flagged(checks: dict[str, dict[str, Any]]) -> list[str]:
    """Names of the checks that raised a flag."""
    return [k for k, v in checks.items() if v.get("flagged")]


def unbounded_budget(norm: str, input_shape: Sequence[int]) -> float:
    """A budget that allows any image in ``[0, 1]^d``: Linf 1.0, L2 ``sqrt(d)``, L1 ``d``."""
    d = float(np.prod(input_shape))
    return {"linf": 1.0, "l2": math.sqrt(d), "l1": d}[norm]


# --------------------------------------------------------------------------- pure checks


def unbounded_check(rows: Iterable[dict[str, Any]], tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Check 1 from probe rows ``{checkpoint, norm, attack, epsilon, n, robust}``."""
    rows = list(rows)
    if not rows:
        return _entry(None, "not checked: no white-box attack to probe with")
    bad = [r for r in rows if r["n"] and r["robust"] / r["n"] > tolerance]
    listing = "; ".join(
        f"{r['checkpoint']}/{r['norm']}: {r['attack']} leaves {r['robust']}/{r['n']} robust at "
        f"eps {r['epsilon']:.4g}"
        for r in (bad or rows)[:6]
    )
    if bad:
        return _entry(
            True,
            f"robust accuracy above {tolerance:.0%} at a budget that allows any image "
            f"(gradients do not lead the attack): {listing}",
            rows=rows,
        )
    return _entry(False, f"~0 robust accuracy at the unbounded budget: {listing}", rows=rows)


def _white_box_only(cell: CellRecord) -> np.ndarray:
    """Bool (K, N): robust to the white-box part of ``cell`` (a cascade's Square breaks undone)."""
    robust = cell.outcome.robust.astype(bool)
    bb = cell.outcome.black_box_broken
    return robust if bb is None else robust | bb.astype(bool)


def white_box_robust(cells: Sequence[CellRecord]) -> np.ndarray | None:
    """Bool (K, N): robust under every white-box attack, nested over epsilon (None if none)."""
    white = [_white_box_only(c) for c in cells if not c.gradient_free]
    if not white:
        return None
    return np.logical_and.accumulate(np.logical_and.reduce(white), axis=0)


def black_box_check(
    cells: Sequence[CellRecord],
    probes: Sequence[dict[str, Any]] = (),
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Check 2: gradient-free attacks (grid cells and probes) vs every white-box attack.

    ``probes``: rows ``{checkpoint, norm, attack, epsilon, n, survivors, broken}`` (``n`` examples
    probed, ``survivors`` of them robust to every white-box attack at ``epsilon``, ``broken`` of
    those broken by the gradient-free attack).
    """
    rows: list[dict[str, Any]] = [dict(p) for p in probes]
    groups: dict[tuple[str, str], list[CellRecord]] = {}
    for c in cells:
        groups.setdefault((c.checkpoint, c.norm), []).append(c)
    for (ckpt, norm), group in groups.items():
        white = white_box_robust(group)
        for c in group:
            # a gradient-free cell: what it broke; a cascade: what its gradient-free stage broke
            bb = c.outcome.black_box_broken
            if white is None:
                continue
            if c.gradient_free:
                hit = ~c.outcome.robust.astype(bool)
            elif bb is not None:
                hit = bb.astype(bool)
            else:
                continue
            broken = white & hit  # (K, N)
            for k, e in enumerate(c.outcome.epsilons):
                if e <= 0:
                    continue
                rows.append(
                    {
                        "checkpoint": ckpt,
                        "norm": norm,
                        "attack": c.attack if c.gradient_free else f"{c.attack} (Square stage)",
                        "epsilon": float(e),
                        "n": int(white.shape[1]),
                        "survivors": int(white[k].sum()),
                        "broken": int(broken[k].sum()),
                    }
                )
    if not rows:
        return _entry(None, "not checked: no gradient-free attack ran (no black-box probe)")
    # a sampled probe's row (``--masking sample``) flags on its estimate of the count among all
    # survivors (evaluations.engine.masking_budget): broken * survivors / sample
    bad = [r for r in rows if r["n"] and _count(r) / r["n"] > tolerance]
    total = sum(r["broken"] for r in rows)
    if bad:
        listing = "; ".join(
            f"{r['checkpoint']}/{r['norm']} eps {r['epsilon']:.4g}: {r['attack']} broke "
            f"{r['broken']} of {_of(r)} white-box survivors (n = {r['n']})"
            for r in bad[:6]
        )
        return _entry(
            True,
            f"a gradient-free attack breaks examples every white-box attack left robust: {listing}",
            count=total,
            rows=rows,
        )
    raw = sum(int(r.get("broken_by_black_box", r["broken"])) for r in rows)
    weak = (
        f"; the probe broke {raw - total} more that APGD-CE / APGD-T then also broke (the "
        "protocol's white-box attacks are weaker than AutoAttack's, not masked)"
        if raw > total
        else ""
    )
    return _entry(
        False,
        f"gradient-free attacks broke {total} white-box survivors in all "
        f"(at most {tolerance:.0%} of the examples at any epsilon){weak}",
        count=total,
        rows=rows,
    )


def _count(row: dict[str, Any]) -> float:
    """Broken white-box survivors of a probe row: its estimate when the row is a sample."""
    return float(row.get("estimated_broken", row["broken"]))


def _of(row: dict[str, Any]) -> str:
    """``"S"`` survivors, or ``"s sampled of S"`` for a sampled row."""
    if "sample" in row:
        return f"{row['sample']} sampled of {row['survivors']}"
    return str(row["survivors"])


def gradient_check(rows: Iterable[dict[str, Any]], tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Check 3 from probe rows ``{checkpoint, n, zero, nonfinite}``."""
    rows = list(rows)
    if not rows:
        return _entry(None, "not checked: no probe examples")
    bad = [r for r in rows if r["n"] and (r["zero"] + r["nonfinite"]) / r["n"] > tolerance]
    if bad:
        listing = "; ".join(
            f"{r['checkpoint']}: {r['zero']} zero and {r['nonfinite']} non-finite of {r['n']}"
            for r in bad[:6]
        )
        return _entry(
            True,
            f"input gradients are zero or non-finite for more than {tolerance:.0%}: {listing}",
            rows=rows,
        )
    n = sum(r["n"] for r in rows)
    return _entry(False, f"finite, non-zero input gradients ({n} probed examples)", rows=rows)


def randomness_check(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Check 4 from probe rows ``{checkpoint, n, disagree, max_logit_diff}``."""
    rows = list(rows)
    if not rows:
        return _entry(None, "not checked: no probe examples")
    bad = [r for r in rows if r["disagree"] > 0 or r["max_logit_diff"] > 0]
    if bad:
        listing = "; ".join(
            f"{r['checkpoint']}: {r['disagree']}/{r['n']} predictions differ, max logit "
            f"difference {r['max_logit_diff']:.3g}"
            for r in bad[:6]
        )
        return _entry(
            True,
            f"two forward passes disagree (randomized model: evaluate with EOT): {listing}",
            rows=rows,
        )
    return _entry(False, "two forward passes give identical logits", rows=rows)


def batch_dependence_check(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Check 6 from probe rows ``{checkpoint, n, alone, changed, max_logit_diff, logit_scale}``.

    Flags a checkpoint whose eval-mode logits change (beyond :data:`BATCH_RTOL` of its logit
    scale, or in a prediction) when an example is evaluated alone or in another batch.
    """
    rows = list(rows)
    if not rows:
        return _entry(None, "not checked: no probe examples")

    def moved(r: dict[str, Any]) -> bool:
        limit = BATCH_RTOL * max(1.0, float(r["logit_scale"]))
        return bool(r["changed"] > 0 or not float(r["max_logit_diff"]) <= limit)

    bad = [r for r in rows if moved(r)]
    if bad:
        listing = "; ".join(
            f"{r['checkpoint']}: {r['changed']}/{r['n']} predictions change, max logit "
            f"difference {float(r['max_logit_diff']):.3g}"
            for r in bad[:6]
        )
        return _entry(
            True,
            "eval-mode predictions depend on the batch (batch statistics, e.g. BatchNorm with "
            f"track_running_stats=False; robust accuracy then depends on batching): {listing}",
            rows=rows,
        )
    return _entry(False, "each example's logits are the same alone and in another batch", rows=rows)


def _worst_counts(cells: Sequence[CellRecord]) -> dict[tuple[str, str], tuple[list[float], Any]]:
    groups: dict[tuple[str, str], list[CellRecord]] = {}
    for c in cells:
        groups.setdefault((c.checkpoint, c.norm), []).append(c)
    out: dict[tuple[str, str], tuple[list[float], Any]] = {}
    for key, group in groups.items():
        robust = np.logical_and.accumulate(
            np.logical_and.reduce([c.outcome.robust.astype(bool) for c in group]), axis=0
        )  # (K, N)
        out[key] = (list(group[0].outcome.epsilons), robust)
    return out


def convergence_check(
    base: pd.DataFrame, stronger: pd.DataFrame, *, base_label: str, stronger_label: str
) -> dict[str, Any]:
    """Check 5: flag where ``stronger`` is below ``base``'s 95 % Wilson lower bound.

    Both frames have columns ``checkpoint, norm, epsilon, n, robust_correct`` (worst-case rows).
    """
    keys = ["checkpoint", "norm", "epsilon"]
    merged = base[[*keys, "n", "robust_correct"]].merge(
        stronger[[*keys, "n", "robust_correct"]], on=keys, suffixes=("_base", "_strong")
    )
    if merged.empty:
        return _entry(None, f"not checked: no common rows of {base_label} and {stronger_label}")
    low, _ = wilson_interval(merged["robust_correct_base"].to_numpy(), merged["n_base"].to_numpy())
    strong = merged["robust_correct_strong"].to_numpy() / merged["n_strong"].to_numpy()
    bad = merged[strong < low - 1e-12]
    records: list[dict[Any, Any]] = merged.to_dict("records")
    rows = [
        {
            "checkpoint": str(r["checkpoint"]),
            "norm": str(r["norm"]),
            "epsilon": float(r["epsilon"]),
            "base": int(r["robust_correct_base"]),
            "stronger": int(r["robust_correct_strong"]),
            "n": int(r["n_base"]),
        }
        for r in records
    ]
    if not bad.empty:
        listing = "; ".join(
            f"{r.checkpoint}/{r.norm} eps {float(r.epsilon):.4g}: {stronger_label} "
            f"{int(r.robust_correct_strong)} vs {base_label} {int(r.robust_correct_base)} "
            f"of {int(r.n_base)}"
            for r in bad.head(6).itertuples(index=False)
        )
        return _entry(
            True,
            f"not converged: {stronger_label} is below {base_label}'s 95 % interval: {listing}",
            rows=rows,
        )
    return _entry(
        False,
        f"{stronger_label} stays within {base_label}'s 95 % interval at all "
        f"{len(merged)} (checkpoint, norm, epsilon)",
        rows=rows,
    )


def convergence_from_cells(cells: Sequence[CellRecord]) -> dict[str, Any]:
    """Check 5 inside one run: worst case over the ``standard`` attacks vs with ``thorough``'s
    additions (``autoattack-plus``); not checked when the run has none of them."""
    base_cells = [c for c in cells if c.attack in STANDARD_ATTACKS]
    extra = sorted({c.attack for c in cells} & THOROUGH_EXTRA)
    if not extra or not base_cells:
        return _entry(
            None,
            "not checked: needs a thorough run (the standard attacks plus stronger ones), or "
            "compare two results directories with masking.convergence_from_results",
        )

    def frame(subset: Sequence[CellRecord]) -> pd.DataFrame:
        rows = []
        for (ckpt, norm), (eps, robust) in _worst_counts(subset).items():
            for k, e in enumerate(eps):
                rows.append(
                    {
                        "checkpoint": ckpt,
                        "norm": norm,
                        "epsilon": float(e),
                        "n": int(robust.shape[1]),
                        "robust_correct": int(robust[k].sum()),
                    }
                )
        return pd.DataFrame(rows)

    return convergence_check(
        frame(base_cells),
        frame(cells),
        base_label="the standard attacks",
        stronger_label="+ " + ", ".join(extra),
    )


def convergence_from_results(standard: pd.DataFrame, thorough: pd.DataFrame) -> dict[str, Any]:
    """Check 5 across two results tables (``standard`` and ``thorough`` runs): worst-case rows."""
    return convergence_check(
        standard[standard["attack"] == WORST_CASE],
        thorough[thorough["attack"] == WORST_CASE],
        base_label="standard",
        stronger_label="thorough",
    )


# --------------------------------------------------------------------------- probes
