"""The modelled hardware cost of every evaluated checkpoint: ``costs.csv`` beside the results.

One row per checkpoint, from :func:`robustbench_sparse.cost.model_cost` on the checkpoint's own
input shape (its dataset's), written by the run path where the checkpoints are loaded
(``rbs/finish.py``) and read by the report, which joins it to the results on ``checkpoint``:

=======================  =====================================================================
column                   meaning (per input example)
=======================  =====================================================================
checkpoint               checkpoint name (the results' ``checkpoint``)
input_shape              ``C,H,W`` the counts are for
macs_dense               MACs of every conv / linear layer, dense (exact count)
macs_effective           MACs with every zero weight skipped (exact count)
macs_compact             MACs after dead filters / channels are removed (exact count)
macs_2to4                MACs on 2:4 sparse tensor cores (half where the weights fit 2:4)
speedup_effective        ``macs_dense / macs_effective`` (modelled speed-up of a zero-skipping
                         engine, ideal balance)
speedup_compact          ``macs_dense / macs_compact`` (a dense engine on the thinned model)
speedup_2to4             ``macs_dense / macs_2to4``
weight_bytes_dense       conv / linear weights at ``value_bits`` per value
weight_bytes_compact     the same after compaction
weight_bytes_sparse      kept values + the packed export's position codes
value_bits               bits per modelled weight value (the accelerator spec's)
=======================  =====================================================================

:func:`pareto_front` marks the checkpoints no other one beats on both robustness and cost.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluations.record.budgets import choose_budgets
from evaluations.record.metrics import WORST_CASE, robustness_auc
from robustbench_sparse.atomic import atomic_path
from robustbench_sparse.checkpoint import LoadedCheckpoint
from robustbench_sparse.cost import AcceleratorSpec, model_cost
from robustbench_sparse.errors import UserError

__all__ = [
    "COSTS_FILE",
    "COST_AXES",
    "COST_COLUMNS",
    "cost_table",
    "pareto_front",
    "read_costs",
    "robustness_vs_cost",
    "write_costs",
]

logger = logging.getLogger(__name__)

COSTS_FILE = "costs.csv"
COST_COLUMNS = [
    "checkpoint",
    "input_shape",
    "macs_dense",
    "macs_effective",
    "macs_compact",
    "macs_2to4",
    "speedup_effective",
    "speedup_compact",
    "speedup_2to4",
    "weight_bytes_dense",
    "weight_bytes_compact",
    "weight_bytes_sparse",
    "value_bits",
]
_SPARSE_ENGINE = "zero-skip/filter-per-pe"  # weight bytes are the same for every mapping


def _row(ckpt: LoadedCheckpoint, spec: AcceleratorSpec) -> dict[str, Any]:
    shape = tuple(int(s) for s in ckpt.info.input_shape)
    total = model_cost(ckpt.model, ckpt.masks, shape, spec=spec).total()
    wb = total["weight_bytes"]
    return {
        "checkpoint": ckpt.name,
        "input_shape": ",".join(str(s) for s in shape),
        **{k: int(total[k]) for k in ("macs_dense", "macs_effective", "macs_compact", "macs_2to4")},
        **{
            f"speedup_{k}": float(total[f"speedup_{k}"] or np.nan)
            for k in ("effective", "compact", "2to4")
        },
        "weight_bytes_dense": float(wb["dense"]),
        "weight_bytes_compact": float(wb["compact"]),
        "weight_bytes_sparse": float(wb[_SPARSE_ENGINE]),
        "value_bits": spec.value_bits,
    }


def cost_table(
    checkpoints: Sequence[LoadedCheckpoint], spec: AcceleratorSpec | None = None
) -> pd.DataFrame:
    """One row per checkpoint (columns :data:`COST_COLUMNS`); a checkpoint the cost model cannot
    describe (``UserError``, e.g. an input shape its model refuses) is left out with a warning."""
    spec = spec or AcceleratorSpec()
    rows = []
    for ckpt in checkpoints:
        try:
            rows.append(_row(ckpt, spec))
        except UserError as exc:
            logger.warning("no cost model for %s: %s", ckpt.name, exc)
    return pd.DataFrame(rows, columns=COST_COLUMNS)


def write_costs(out_dir: str | os.PathLike[str], table: pd.DataFrame) -> Path:
    """Write ``costs.csv`` atomically into ``out_dir``."""
    path = Path(out_dir) / COSTS_FILE
    with atomic_path(path) as tmp:
        table.loc[:, COST_COLUMNS].to_csv(tmp, index=False)
    logger.info("wrote the cost model of %d checkpoints to %s", len(table), path)
    return path


def read_costs(out_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """``costs.csv`` of a results directory; an empty frame (same columns) when absent."""
    path = Path(out_dir) / COSTS_FILE
    if not path.is_file():
        return pd.DataFrame(columns=COST_COLUMNS)
    table = pd.read_csv(path, dtype={"checkpoint": "str", "input_shape": "str"})
    missing = [c for c in COST_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"{path} lacks columns {', '.join(missing)}; re-run to rewrite it")
    return table


def pareto_front(gain: Sequence[float], cost: Sequence[float]) -> np.ndarray:
    """Bool mask of the points no other point dominates (higher-or-equal ``gain`` at lower-or-
    equal ``cost``, strictly better in one). ``gain``: e.g. robust accuracy; ``cost``: e.g. MACs or
    bytes (pass ``-speed-up`` to treat a speed-up as a gain). NaN points are never on the front."""
    g = np.asarray(gain, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    ok = np.isfinite(g) & np.isfinite(c)
    front = np.zeros(g.shape, dtype=bool)
    for i in np.flatnonzero(ok):
        better = ok & (g >= g[i]) & (c <= c[i]) & ((g > g[i]) | (c < c[i]))
        front[i] = not bool(better.any())
    return front


#: the cost axes of :func:`robustness_vs_cost`: column -> (label, lower is better)
COST_AXES: dict[str, tuple[str, bool]] = {
    "speedup_effective": ("MAC speed-up, zero weights skipped (modelled)", False),
    "speedup_compact": ("MAC speed-up, dense engine on the thinned model (modelled)", False),
    "weight_bytes_sparse": ("weight bytes: kept values + position codes (modelled)", True),
}


def _training_label(rows: pd.DataFrame) -> str:
    """The training label of one checkpoint's rows (``standard`` when the results have none)."""
    if "training" not in rows:
        return "standard"
    value = rows["training"].iloc[0]
    return value if isinstance(value, str) and value else "standard"


def robustness_vs_cost(df: pd.DataFrame, costs: pd.DataFrame) -> pd.DataFrame:
    """One row per (norm, checkpoint with a cost row): robustness next to its modelled cost.

    Robustness is the worst case over the attacks: ``robust_accuracy`` at the norm's anchor
    budget (:func:`~evaluations.record.budgets.choose_budgets`, column ``epsilon``) and ``auc``
    (:func:`~evaluations.record.metrics.robustness_auc` over the ε grid; the lowest over backends).
    Cost columns are :data:`COST_COLUMNS`; ``training`` is the checkpoint's training label
    (``standard`` where the results have no training columns); ``pareto_<axis>_<acc|auc>`` flags
    the checkpoints on the Pareto front of that robustness number against each :data:`COST_AXES`
    axis, over the checkpoints of the same norm and training (dense included: an adversarially
    trained model is compared with its own kind, never with a standard-trained one). Empty when
    there are no worst-case rows or costs.
    """
    wc = df[df["attack"] == WORST_CASE]
    budgets = choose_budgets(df)
    rows: list[dict[str, Any]] = []
    for norm, choice in budgets.items():
        data = wc[wc["norm"] == norm]
        for name, cur in data.groupby("checkpoint", sort=False):
            at = cur[np.isclose(cur["epsilon"].to_numpy(float), choice.anchor, rtol=1e-9, atol=0)]
            if at.empty:
                continue
            aucs = [
                robustness_auc(g["epsilon"], g["robust_accuracy"])
                for _, g in cur.groupby("backend", sort=False)
            ]
            rows.append(
                {
                    "norm": norm,
                    "checkpoint": str(name),
                    "granularity": str(cur["granularity"].iloc[0]),
                    "training": _training_label(cur),
                    "sparsity_target": float(cur["sparsity_target"].iloc[0]),
                    "sparsity_achieved": float(cur["sparsity_achieved"].iloc[0]),
                    "clean_accuracy": float(cur["clean_accuracy"].iloc[0]),
                    "epsilon": choice.anchor,
                    "robust_accuracy": float(at["robust_accuracy"].min()),
                    "auc": min(aucs),
                }
            )
    points = pd.DataFrame(rows)
    if points.empty or costs.empty:
        return pd.DataFrame()
    merged = points.merge(costs, on="checkpoint", how="inner")
    for group_norm, training in merged[["norm", "training"]].drop_duplicates().to_numpy():
        sel = ((merged["norm"] == group_norm) & (merged["training"] == training)).to_numpy()
        for axis, (_, lower_better) in COST_AXES.items():
            cost = merged.loc[sel, axis].to_numpy(float)
            cost = cost if lower_better else -cost
            for gain in ("robust_accuracy", "auc"):
                col = f"pareto_{axis}_{'acc' if gain == 'robust_accuracy' else 'auc'}"
                merged.loc[sel, col] = pareto_front(merged.loc[sel, gain].to_numpy(float), cost)
    return merged.reset_index(drop=True)
