"""Report section: robustness next to the modelled hardware cost of each checkpoint.

"What this pattern buys, what it costs": per norm, one row per checkpoint with its worst-case
robust accuracy at the anchor budget and its AUC beside the modelled MAC speed-ups and weight
bytes of ``costs.csv`` (:mod:`evaluations.record.costs`), and whether it is on a Pareto front.
"""

from __future__ import annotations

import math

import pandas as pd

from attacks.params import format_epsilon
from evaluations.present.document import Block, Heading, Paragraph, Table
from evaluations.present.ordering import iter_rows, norm_label
from evaluations.present.report_format import checkpoint_table, pct
from evaluations.record.costs import robustness_vs_cost

__all__ = ["cost_blocks"]

_INTRO = (
    "Robustness against what the sparsity pattern buys on hardware. MAC counts are exact "
    "(per input example, every conv and linear layer); the speed-ups and byte counts they imply "
    "are MODELLED, not measured: 'zero-skip' = dense MACs / MACs with every zero weight skipped "
    "(an ideal sparse engine, perfect balance), 'compact' = dense MACs / MACs after dead filters "
    "and channels are removed (a dense engine on the thinned model; Campfire's window, channel "
    "and combined patterns leave almost nothing to remove), '2:4' = dense MACs / MACs on 2:4 "
    "sparse tensor cores (half where the weights fit 2:4 along the input channels). Weight "
    "bytes: 8-bit values plus the packed export's position codes (`rbs cost CKPT` shows per-layer "
    "numbers, load imbalance and a roofline; docs/cost-model.md defines them). ✓ marks the "
    "Pareto front: no other checkpoint of the same training (standard, PGD-AT, ...) is both more "
    "robust and cheaper on that axis."
)


def _x(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.2f}×"


def _tick(flag: object) -> str:
    return "✓" if bool(flag) else ""


def cost_blocks(df: pd.DataFrame, costs: pd.DataFrame) -> list[Block]:
    """The section, or nothing when the results directory has no ``costs.csv``."""
    points = robustness_vs_cost(df, costs)
    if points.empty:
        return []
    blocks: list[Block] = [Heading(2, "Robustness against modelled cost"), Paragraph(_INTRO)]
    order = {name: i for i, name in enumerate(checkpoint_table(df)["checkpoint"])}
    for norm, pts in points.groupby("norm", sort=False):
        pts = pts.assign(_o=pts["checkpoint"].map(order)).sort_values("_o")
        grid = sorted({float(e) for e in df.loc[df["norm"] == norm, "epsilon"]})
        eps = format_epsilon(float(pts["epsilon"].iloc[0]), grid=grid)
        rows = [
            [
                str(r.checkpoint),
                str(r.granularity),
                pct(r.sparsity_target),
                pct(r.robust_accuracy),
                pct(r.auc),
                _x(float(r.speedup_effective)),
                _x(float(r.speedup_compact)),
                _x(float(r.speedup_2to4)),
                f"{float(r.weight_bytes_sparse) / 1024:,.1f} / {float(r.weight_bytes_dense) / 1024:,.1f}",
                " ".join(
                    s
                    for s, f in (
                        ("acc", r.pareto_speedup_effective_acc),
                        ("auc", r.pareto_speedup_effective_auc),
                    )
                    if bool(f)
                ),
                _tick(r.pareto_weight_bytes_sparse_acc),
            ]
            for r in iter_rows(pts)
        ]
        headers = [
            "checkpoint",
            "granularity",
            "sparsity target (%)",
            f"robust (%) at ε={eps}",
            "AUC (%)",
            "speed-up zero-skip",
            "speed-up compact",
            "speed-up 2:4",
            "weight KiB sparse / dense",
            "Pareto vs zero-skip speed-up",
            "Pareto acc vs bytes",
        ]
        if pts["training"].nunique() > 1:  # the fronts are per training: say which is which
            rows = [
                [row[0], str(t), *row[1:]] for row, t in zip(rows, pts["training"], strict=True)
            ]
            headers.insert(1, "training")
        blocks.append(Heading(3, f"{norm_label(str(norm))}"))
        blocks.append(
            Table(
                headers,
                rows,
                ["l"] * (len(headers) - 9) + ["r"] * 7 + ["l", "l"],
                f"Worst-case robustness ({norm_label(str(norm))}; anchor budget ε = {eps}, chosen "
                "as in 'Relative to dense') beside the modelled cost of each checkpoint.",
            )
        )
    return blocks
