"""evaluations.record.costs: the per-checkpoint cost table, its file, robustness vs cost, Pareto."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluations.record.costs import (
    COST_COLUMNS,
    COSTS_FILE,
    cost_table,
    pareto_front,
    read_costs,
    robustness_vs_cost,
    write_costs,
)
from evaluations.record.metrics import WORST_CASE, summarize_cell
from evaluations.record.results import RESULT_COLUMNS
from robustbench_sparse.checkpoint import LoadedCheckpoint
from robustbench_sparse.datasets import dataset_info
from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity.granularity import Granularity
from tests.cost_helpers import SMALL_CNN_PRUNED, apply_masks, small_cnn

EPS = [0.0, 0.05, 0.1, 0.2]
# name, granularity, target, worst-case accuracy per eps (dense nearest 50 % at 0.1)
MODELS = (
    ("dense", "dense", 0.0, [0.98, 0.85, 0.52, 0.1]),
    ("window-70", "window", 0.7, [0.98, 0.84, 0.50, 0.1]),
    ("channel-70", "channel", 0.7, [0.97, 0.75, 0.38, 0.05]),
)
N = 200


def results_frame() -> pd.DataFrame:
    """Worst-case rows of three checkpoints on one L∞ grid (nested outcomes)."""
    rows = []
    for name, gran, target, acc in MODELS:
        robust = np.zeros((len(EPS), N), dtype=bool)
        for k, a in enumerate(acc):
            robust[k, : round(a * N)] = True
        for row in summarize_cell(EPS, robust[0], robust, None):
            rows.append(
                {"checkpoint": name, "arch": "small_cnn", "dataset": "digits",
                 "granularity": gran, "sparsity_target": target, "sparsity_achieved": target,
                 "attack": WORST_CASE, "backend": "native", "norm": "linf", **row,
                 "seconds": 0.0, "params": "{}"}
            )  # fmt: skip
    return pd.DataFrame(rows)[RESULT_COLUMNS]


def costs_frame() -> pd.DataFrame:
    """Hand-made costs: window is 3x faster and smaller, channel 2x."""
    rows = [
        ("dense", 900, 900, 1.0, 1.0, 1000.0),
        ("window-70", 300, 900, 3.0, 1.0, 400.0),
        ("channel-70", 450, 900, 2.0, 1.0, 350.0),
    ]
    return pd.DataFrame(
        [
            {"checkpoint": n, "input_shape": "1,8,8", "macs_dense": 900, "macs_effective": eff,
             "macs_compact": comp, "macs_2to4": 900, "speedup_effective": s_eff,
             "speedup_compact": s_comp, "speedup_2to4": 1.0, "weight_bytes_dense": 1000.0,
             "weight_bytes_compact": 1000.0, "weight_bytes_sparse": wb, "value_bits": 8}
            for n, eff, comp, s_eff, s_comp, wb in rows
        ]
    )[COST_COLUMNS]  # fmt: skip


def test_pareto_front_by_hand() -> None:
    gain = [0.5, 0.4, 0.6, 0.4, float("nan")]
    cost = [2.0, 1.0, 3.0, 2.0, 0.0]
    assert pareto_front(gain, cost).tolist() == [True, True, True, False, False]


def test_cost_table_of_loaded_checkpoints_and_its_file(tmp_path: Path) -> None:
    info = dataset_info("digits")
    dense = small_cnn(width=0.25)
    sparse = small_cnn(width=0.25)
    masks = apply_masks(sparse, Granularity.WINDOW, 0.7, SMALL_CNN_PRUNED)
    ckpts = [
        LoadedCheckpoint(dense, {}, tmp_path, "dense", info, {}),
        LoadedCheckpoint(sparse, {}, tmp_path, "window-70", info, masks),
    ]
    table = cost_table(ckpts)
    assert list(table.columns) == COST_COLUMNS
    by_name = table.set_index("checkpoint")
    assert by_name.loc["dense", "speedup_effective"] == 1.0
    assert by_name.loc["window-70", "speedup_effective"] > 2.5  # n_w = 3 of 9 in most MACs
    assert by_name.loc["window-70", "speedup_compact"] == 1.0
    assert (
        by_name.loc["window-70", "weight_bytes_sparse"]
        < by_name.loc["dense", "weight_bytes_sparse"]
    )
    assert by_name.loc["dense", "input_shape"] == "1,8,8"
    write_costs(tmp_path, table)
    pd.testing.assert_frame_equal(read_costs(tmp_path), table, check_dtype=False)


def test_read_costs_absent_or_broken(tmp_path: Path) -> None:
    assert read_costs(tmp_path).empty
    (tmp_path / COSTS_FILE).write_text("checkpoint,macs_dense\nx,1\n")
    with pytest.raises(UserError, match="lacks columns"):
        read_costs(tmp_path)


def test_robustness_vs_cost_joins_the_anchor_budget_and_marks_the_front() -> None:
    points = robustness_vs_cost(results_frame(), costs_frame()).set_index("checkpoint")
    assert set(points["epsilon"]) == {0.1}  # the anchor: dense nearest 50 %
    assert points.loc["window-70", "robust_accuracy"] == pytest.approx(0.50)
    assert points.loc["dense", "auc"] > points.loc["channel-70", "auc"]
    front = points["pareto_speedup_effective_acc"].astype(bool)
    assert front.to_dict() == {"dense": True, "window-70": True, "channel-70": False}
    bytes_front = points["pareto_weight_bytes_sparse_acc"].astype(bool)
    assert bytes_front.to_dict() == {"dense": True, "window-70": True, "channel-70": True}
    assert robustness_vs_cost(results_frame(), pd.DataFrame(columns=COST_COLUMNS)).empty


def test_pareto_fronts_are_per_training_method() -> None:
    """An adversarially trained model is compared with its own kind: a more robust AT copy of
    each checkpoint does not push the standard-trained ones off their front."""
    std = results_frame().assign(training="standard")
    at = results_frame().assign(training="AT (linf 0.1, PGD-5)")
    at["checkpoint"] = "pgd-" + at["checkpoint"]
    at["robust_correct"] = at["clean_correct"]  # AT: nothing broken, everything more robust
    at["robust_accuracy"] = at["clean_accuracy"]
    costs = costs_frame()
    costs_at = costs.assign(checkpoint="pgd-" + costs["checkpoint"])
    points = robustness_vs_cost(
        pd.concat([std, at], ignore_index=True), pd.concat([costs, costs_at], ignore_index=True)
    ).set_index("checkpoint")
    assert set(points["training"]) == {"standard", "AT (linf 0.1, PGD-5)"}
    front = points["pareto_speedup_effective_acc"].astype(bool)
    assert front[["dense", "window-70", "channel-70"]].tolist() == [True, True, False]
    # AT: window-70 keeps dense's accuracy at 3x, so it alone is on the AT front
    assert front[["pgd-dense", "pgd-window-70", "pgd-channel-70"]].tolist() == [False, True, False]
    # without the split (no training column) pgd-window-70 would be the only point on the front
    unsplit = robustness_vs_cost(
        pd.concat([std, at], ignore_index=True).drop(columns="training"),
        pd.concat([costs, costs_at], ignore_index=True),
    ).set_index("checkpoint")
    assert unsplit["training"].eq("standard").all()
    assert unsplit["pareto_speedup_effective_acc"].astype(bool).sum() == 1
