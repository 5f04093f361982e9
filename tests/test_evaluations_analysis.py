"""Tests for evaluations.present.analysis: sparsity tables and mask figures of checkpoints, results pivots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from evaluations.present.analysis import (
    KERNEL_NNZ_COLUMNS,
    accuracy_vs_sparsity_table,
    auc_pivot,
    checkpoint_sparsity_report,
    conv_layers,
    kernel_nnz_table,
    layer_sparsity_table,
    load_checkpoints_under,
    min_norm_summary,
    nearest_epsilon,
    plot_kernel_nnz_hist,
    plot_mask_heatmaps,
    plot_min_norm_distributions,
    robust_accuracy_pivot,
    sparsity_totals_table,
)
from evaluations.record.metrics import WORST_CASE, robustness_auc_table
from robustbench_sparse.checkpoint import LoadedCheckpoint
from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity import kept_per_group
from robustbench_sparse.train_job import run_train_job
from tests.eval_helpers import single_thread, train_job
from tests.test_evaluations_results import synthetic_results

PRUNED_3X3 = ["net.conv2.0.weight", "net.conv3.0.weight", "net.conv4.0.weight"]


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny digits checkpoints: dense and window / channel / combined at 70 %."""
    root = tmp_path_factory.mktemp("ckpts")
    jobs = {
        "combined-70": train_job("combined-70", 0.7, "combined"),
        "window-70": train_job("window-70", 0.7, "window"),
        "dense": train_job("dense"),
        "channel-70": train_job("channel-70", 0.7, "channel"),
    }
    with single_thread():
        for name, job in jobs.items():
            run_train_job(job, root / name, progress=False)
    return root


@pytest.fixture(scope="module")
def ckpts(ckpt_root: Path) -> dict[str, LoadedCheckpoint]:
    return load_checkpoints_under(ckpt_root)


# --------------------------------------------------------------------------- checkpoints


def test_load_checkpoints_under_orders_dense_then_granularities(
    ckpts: dict[str, LoadedCheckpoint], ckpt_root: Path
) -> None:
    assert list(ckpts) == ["dense", "window-70", "channel-70", "combined-70"]
    single = load_checkpoints_under(ckpt_root / "window-70")
    assert list(single) == ["window-70"]


def test_load_checkpoints_under_without_checkpoints_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no checkpoint"):
        load_checkpoints_under(tmp_path)


def test_report_recomputed_from_weights_matches_recorded(
    ckpts: dict[str, LoadedCheckpoint],
) -> None:
    for ckpt in ckpts.values():
        rep = checkpoint_sparsity_report(ckpt)
        recorded = ckpt.meta["sparsity_report"]
        assert rep.achieved_pruned == pytest.approx(recorded["achieved_pruned"])
        assert rep.nnz_all == recorded["nnz_all"]
        assert rep.pruned_names == ckpt.meta["pruned_layers"]


def test_layer_sparsity_table(ckpts: dict[str, LoadedCheckpoint]) -> None:
    table = layer_sparsity_table(ckpts)
    n_layers = len(checkpoint_sparsity_report(ckpts["dense"]).layers)
    assert len(table) == 4 * n_layers
    assert list(table["checkpoint"].unique()) == list(ckpts)
    np.testing.assert_allclose(table["achieved"], 1 - table["nnz"] / table["numel"])
    window = table[(table["checkpoint"] == "window-70") & table["name"].isin(PRUNED_3X3)]
    assert (window["granularity"] == "window").all()
    assert (window["target"] == 0.7).all()
    assert window["rounded_target"].to_numpy() == pytest.approx(6 / 9)
    assert window["achieved"].to_numpy() == pytest.approx(6 / 9)
    dense = table[table["checkpoint"] == "dense"]
    assert not dense["pruned"].any() and (dense["achieved"] == 0).all()
    assert table["shape"].str.fullmatch(r"\d+(x\d+)*").all()


def test_sparsity_totals_table(ckpts: dict[str, LoadedCheckpoint]) -> None:
    totals = sparsity_totals_table(ckpts).set_index("checkpoint")
    assert totals.loc["dense", "achieved_all"] == 0
    for name in ("window-70", "channel-70", "combined-70"):
        row = totals.loc[name]
        assert row["achieved_pruned"] == pytest.approx(1 - row["nnz_pruned"] / row["numel_pruned"])
        assert 0.6 < row["achieved_pruned"] < 0.75
        assert row["achieved_all"] < row["achieved_pruned"]  # dense layers dilute it


def test_conv_layers_skips_1x1(ckpts: dict[str, LoadedCheckpoint]) -> None:
    model = ckpts["dense"].model
    names = conv_layers(model)
    assert names == ["net.conv1.0.weight", *PRUNED_3X3]
    assert "net.conv5.0.weight" in conv_layers(model, min_kernel_size=1)


def test_kernel_nnz_table_window_keeps_the_same_count_per_kernel(
    ckpts: dict[str, LoadedCheckpoint],
) -> None:
    table = kernel_nnz_table(ckpts["window-70"].model, PRUNED_3X3)
    assert list(table.columns) == KERNEL_NNZ_COLUMNS
    assert (table["nnz"] == kept_per_group(9, 0.7)).all()
    w = dict(ckpts["window-70"].model.named_parameters())["net.conv2.0.weight"]
    assert (table["layer"] == "net.conv2.0.weight").sum() == w.shape[0] * w.shape[1]


def test_kernel_nnz_table_channel_and_combined(ckpts: dict[str, LoadedCheckpoint]) -> None:
    channel = kernel_nnz_table(ckpts["channel-70"].model, PRUNED_3X3)
    assert set(channel["nnz"]) == {0, 9}
    kept = channel[channel["nnz"] > 0].groupby(["layer", "filter"]).size()
    assert (kept.groupby(level="layer").nunique() == 1).all()  # same kernels per filter
    combined = kernel_nnz_table(ckpts["combined-70"].model, PRUNED_3X3)
    assert len(set(combined["nnz"]) - {0}) == 1  # one window count inside kept kernels


def test_kernel_nnz_table_names_and_defaults(ckpts: dict[str, LoadedCheckpoint]) -> None:
    model = ckpts["window-70"].model
    by_module = kernel_nnz_table(model, ["net.conv2.0"])
    assert set(by_module["layer"]) == {"net.conv2.0.weight"}
    default = kernel_nnz_table(model)
    assert list(dict.fromkeys(default["layer"])) == conv_layers(model)
    assert kernel_nnz_table(model, ["net.fc.weight"]).empty  # not a conv: skipped
    with pytest.raises(UserError, match="no parameter or module"):
        kernel_nnz_table(model, ["net.nope"])


def test_kernel_nnz_table_counts_known_zeros() -> None:
    conv = torch.nn.Conv2d(2, 3, 3, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.weight[1, 0, :2] = 0.0  # kernel (1, 0) keeps 3
        conv.weight[2, 1] = 0.0  # kernel (2, 1) empty
    table = kernel_nnz_table(conv, ["weight"]).set_index(["filter", "channel"])["nnz"]
    assert table[(1, 0)] == 3 and table[(2, 1)] == 0 and table[(0, 0)] == 9
    assert len(table) == 6


def test_plot_kernel_nnz_hist(ckpts: dict[str, LoadedCheckpoint]) -> None:
    fig = plot_kernel_nnz_hist(ckpts)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == len(ckpts)
    assert all(ax.patches for ax in fig.axes)  # bars drawn in every panel
    with pytest.raises(UserError):
        plot_kernel_nnz_hist({})


def test_plot_mask_heatmaps_shows_the_masks(ckpts: dict[str, LoadedCheckpoint]) -> None:
    chosen = {k: ckpts[k] for k in ("window-70", "channel-70", "combined-70")}
    fig = plot_mask_heatmaps(chosen, filters=(0, 2), max_channels=None)
    assert len(fig.axes) == 3 * 2
    # The first layer defaults to the first pruned k×k conv; panel (row 0, col 1) is filter 2.
    mask = chosen["window-70"].masks["net.conv2.0.weight"][2].numpy()  # (C, 3, 3)
    image = np.asarray(fig.axes[1].images[0].get_array().filled(np.nan))
    kept_in_image = int(np.nansum(image))
    assert kept_in_image == int(mask.sum())
    assert math.isclose(np.nanmax(image), 1.0)
    c = mask.shape[0]
    cols = math.ceil(math.sqrt(c))
    np.testing.assert_array_equal(image[:3, :3], mask[0].astype(float))
    np.testing.assert_array_equal(image[:3, 4:7], mask[1].astype(float))
    assert image.shape == (math.ceil(c / cols) * 4 - 1, cols * 4 - 1)
    assert np.isnan(image[3, 0]) and np.isnan(image[0, 3])  # gaps between kernels


def test_plot_mask_heatmaps_dense_and_errors(ckpts: dict[str, LoadedCheckpoint]) -> None:
    fig = plot_mask_heatmaps({"dense": ckpts["dense"]}, layer="net.conv2.0", filters=(0,))
    image = fig.axes[0].images[0].get_array()
    assert np.nanmin(np.asarray(image.filled(np.nan))) == 1.0  # dense: everything kept
    with pytest.raises(UserError, match="out of range"):
        plot_mask_heatmaps(ckpts, filters=(10_000,))
    with pytest.raises(UserError, match="not a conv"):
        plot_mask_heatmaps(ckpts, layer="net.fc", filters=(0,))


# --------------------------------------------------------------------------- results


@pytest.fixture(scope="module")
def results() -> tuple[pd.DataFrame, pd.DataFrame]:
    return synthetic_results()


def test_nearest_epsilon(results: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    df, _ = results
    assert nearest_epsilon(df, 0.12, "linf") == 0.1
    assert nearest_epsilon(df, 0.15, "linf") == 0.1  # tie: the smaller
    assert nearest_epsilon(df, 9.0, "l2") == 1.0
    with pytest.raises(UserError, match="no l1 rows"):
        nearest_epsilon(df, 0.1, "l1")


def test_robust_accuracy_pivot(results: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    df, _ = results
    table = robust_accuracy_pivot(df, "linf")
    assert list(table.columns) == [0.0, 0.1, 0.2]
    assert table.index.get_level_values("checkpoint").unique().tolist() == ["dense", "window70"]
    row = df[(df["checkpoint"] == "dense") & (df["attack"] == "pgd") & (df["norm"] == "linf")]
    assert table.loc[("dense", "pgd")].tolist() == row["robust_accuracy"].tolist()
    only = robust_accuracy_pivot(df, "l2", attacks=["cw"])
    assert set(only.index.get_level_values("attack")) == {"cw"}


def test_accuracy_vs_sparsity_table(results: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    df, _ = results
    table = accuracy_vs_sparsity_table(df, 0.11, "linf")
    assert table.attrs["epsilon"] == 0.1
    assert list(table.columns) == ["dense", "window"]
    assert list(table.index) == [0.0, 0.7]
    wc = df[(df["attack"] == WORST_CASE) & (df["norm"] == "linf") & (df["epsilon"] == 0.1)]
    expected = wc.set_index("checkpoint")["robust_accuracy"]
    assert table.loc[0.0, "dense"] == expected["dense"]
    assert table.loc[0.7, "window"] == expected["window70"]
    assert math.isnan(table.loc[0.7, "dense"])
    with pytest.raises(UserError, match="no nope rows"):
        accuracy_vs_sparsity_table(df, 0.1, "linf", attack="nope")


def test_min_norm_summary(results: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, min_norms = results
    summary = min_norm_summary(min_norms).set_index("checkpoint")
    for name, group in min_norms.groupby("checkpoint"):
        correct = group[group["clean_correct"].astype(bool)]["min_norm"].to_numpy()
        finite = correct[np.isfinite(correct)]
        row = summary.loc[name]
        assert row["n_correct"] == len(correct) and row["found"] == len(finite)
        assert row["found_rate"] == pytest.approx(len(finite) / len(correct))
        assert row["median"] == pytest.approx(np.median(finite))
        assert row["min"] <= row["q25"] <= row["median"] <= row["q75"] <= row["max"]
    assert min_norm_summary(min_norms.iloc[0:0]).empty


def test_plot_min_norm_distributions(results: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, min_norms = results
    fig = plot_min_norm_distributions(min_norms)
    assert len(fig.axes) == 1
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["dense", "window70"]
    never = min_norms.assign(min_norm=np.inf)
    with pytest.raises(UserError, match="no finite"):
        plot_min_norm_distributions(never)


def test_auc_pivot(results: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    df, _ = results
    table = auc_pivot(df)
    assert table.index.names == ["checkpoint", "granularity", "sparsity_target"]
    assert table.index.get_level_values("checkpoint").tolist() == ["dense", "window70"]
    flat = robustness_auc_table(df).set_index(["checkpoint", "norm", "attack"])["auc"]
    for (ckpt, _, _), row in table.iterrows():
        for (norm, attack), value in row.items():
            if not math.isnan(value):
                assert value == pytest.approx(flat[(ckpt, norm, attack)])
    linf = auc_pivot(df, norm="linf")
    assert set(linf.columns.get_level_values("norm")) == {"linf"}
