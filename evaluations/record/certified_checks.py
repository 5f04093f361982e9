"""Run invariant between certificates and attacks: IBP-verified accuracy <= attacked robust accuracy.

A verified example cannot be broken by any attack at the same L-infinity eps, so on the same
examples the IBP ``certified_correct`` count (``certified.csv``, method ``ibp``) is never above the
``robust_correct`` count of any white-box attack (``results.csv``: AutoAttack, APGD, PGD, the
worst case, ...) at the same (checkpoint, eps). The comparison needs the same examples, so it is
made where both rows have the same ``n`` (the same selection of the test split); other pairs are
counted as not comparable and said so. A failure means a bug in the bounds or in the attack's
verification, never a property of the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from evaluations.record.results import white_box

__all__ = ["VERIFIED_LE_ATTACKED", "check_verified_le_attacked"]

VERIFIED_LE_ATTACKED = "ibp_verified_le_attacked"
_MAX_LISTED = 5


def check_verified_le_attacked(results: pd.DataFrame, certified: pd.DataFrame) -> dict[str, Any]:
    """``{"passed": bool, "detail": str}``: IBP-verified count <= every attack's robust count.

    ``results``: the grid's rows (``checkpoint, attack, backend, norm, epsilon, n,
    robust_correct``); ``certified``: ``certified.csv`` rows (``checkpoint, method, norm, radius,
    n, certified_correct``). Pairs at the same checkpoint and eps (to 1e-9) with equal ``n`` are
    compared; a check without such pairs passes and says so.
    """
    ibp = certified[(certified["method"] == "ibp") & (certified["norm"] == "linf")]
    attacked = white_box(results[results["norm"] == "linf"]) if not results.empty else results
    if ibp.empty or attacked.empty:
        return {"passed": True, "detail": "no IBP rows or no linf attack rows; nothing to check"}
    left = ibp.assign(eps_key=ibp["radius"].astype(float).round(9))[
        ["checkpoint", "eps_key", "n", "certified_correct"]
    ]
    right = attacked.assign(eps_key=attacked["epsilon"].astype(float).round(9))[
        ["checkpoint", "eps_key", "attack", "backend", "n", "robust_correct"]
    ]
    merged = left.merge(right, on=["checkpoint", "eps_key"], suffixes=("_cert", "_att"))
    same = merged[merged["n_cert"].to_numpy() == merged["n_att"].to_numpy()]
    skipped = len(merged) - len(same)
    note = f" ({skipped} pairs on different example counts not comparable)" if skipped else ""
    if same.empty:
        return {
            "passed": True,
            "detail": "no IBP row shares checkpoint, eps and n with an attack" + note,
        }
    bad = same[
        same["certified_correct"].to_numpy(np.int64) > same["robust_correct"].to_numpy(np.int64)
    ]
    if bad.empty:
        return {
            "passed": True,
            "detail": f"IBP-verified <= attacked robust count in all {len(same)} comparisons"
            + note,
        }
    items = [
        f"{r.checkpoint} eps {r.eps_key:g}: verified {int(r.certified_correct)} > "
        f"{r.attack}/{r.backend} robust {int(r.robust_correct)} of {int(r.n_cert)}"
        for r in bad.head(_MAX_LISTED).itertuples()
    ]
    more = f"; … and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
    return {
        "passed": False,
        "detail": f"{len(bad)} of {len(same)} comparisons violated: " + "; ".join(items) + more,
    }
