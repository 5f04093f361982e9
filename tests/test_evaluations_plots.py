"""Tests for evaluations.present.plots: every figure is written as non-empty PNG + SVG, absent data is skipped."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from evaluations.present.plots import (
    layout_problems,
    plot_accuracy_vs_sparsity,
    plot_all,
    plot_clean_vs_robust,
    plot_cw_ecdf,
    plot_robustness_curves,
    thin_tick_labels,
)
from evaluations.present.plots_curves import _facets
from evaluations.record.metrics import WORST_CASE
from evaluations.record.results import read_min_norms
from tests.test_evaluations_results import synthetic_results, write_synthetic_dir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_figures(paths: list[Path], stems: list[str]) -> None:
    assert sorted(p.name for p in paths) == sorted(
        f"{s}.{e}" for s in stems for e in ("png", "svg")
    )
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000, p
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == PNG_MAGIC
        else:
            assert "<svg" in p.read_text(encoding="utf-8")[:2000]


def test_plot_all_writes_every_figure(tmp_path: Path) -> None:
    write_synthetic_dir(tmp_path)
    paths = plot_all(tmp_path)
    assert all(p.parent == tmp_path / "figures" for p in paths)
    _assert_figures(
        paths,
        [
            "robustness_curves_linf",
            "robustness_curves_l2",
            "accuracy_vs_sparsity_linf",
            "accuracy_vs_sparsity_l2",
            "cw_ecdf",
            "clean_vs_robust_linf",
            "clean_vs_robust_l2",
        ],
    )
    # no temporary files left next to the figures
    assert not [p for p in (tmp_path / "figures").iterdir() if p.name.startswith(".")]


def test_figures_are_skipped_without_data(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    df, _ = synthetic_results(with_l2=False)
    caplog.set_level(logging.INFO, logger="evaluations.present")
    assert plot_cw_ecdf(read_min_norms(tmp_path, missing_ok=True), tmp_path) == []
    no_wc = df[df["attack"] != WORST_CASE]
    assert plot_accuracy_vs_sparsity(no_wc, tmp_path) == []
    assert plot_clean_vs_robust(no_wc, tmp_path) == []
    assert plot_robustness_curves(df.iloc[0:0], tmp_path) == []
    assert "skipped" in caplog.text
    assert not tmp_path.joinpath("cw_ecdf.png").exists()


def test_chosen_epsilons(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    df, _ = synthetic_results(with_l2=False)
    _assert_figures(
        plot_accuracy_vs_sparsity(df, tmp_path, epsilons=[0.1]), ["accuracy_vs_sparsity_linf"]
    )
    _assert_figures(plot_clean_vs_robust(df, tmp_path, epsilon=0.2), ["clean_vs_robust_linf"])
    with caplog.at_level(logging.INFO, logger="evaluations.present"):
        assert plot_clean_vs_robust(df, tmp_path / "none", epsilon=0.37) == []
    assert "not on the" in caplog.text


def _crowded_results() -> pd.DataFrame:
    """Five sparse checkpoints on the same (clean, robust) point: their labels must not collide."""
    df, _ = synthetic_results(with_l2=False)
    sparse = df[df["checkpoint"] == "window70"]
    frames = [df]
    for name, gran, target in (
        ("window90", "window", 0.9),
        ("channel70", "channel", 0.7),
        ("channel90", "channel", 0.9),
        ("combined70", "combined", 0.7),
    ):
        frames.append(sparse.assign(checkpoint=name, granularity=gran, sparsity_target=target))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("crowded", [True, False])
def test_figures_have_no_layout_problems(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, crowded: bool
) -> None:
    # crowded labels, and a single-checkpoint result (whose y label used to be cut off)
    df, _ = synthetic_results(with_l2=False)
    df = _crowded_results() if crowded else df[df["checkpoint"] == "window70"]
    with caplog.at_level(logging.WARNING, logger="evaluations.present"):
        paths = plot_clean_vs_robust(df, tmp_path) + plot_robustness_curves(df, tmp_path)
        paths += plot_accuracy_vs_sparsity(df, tmp_path)
    assert paths
    assert "figure" not in caplog.text, caplog.text


def test_layout_problems_detects_overlap_and_long_labels() -> None:
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.annotate("90%", (0.5, 0.5))
    ax.annotate("90%", (0.5, 0.5))
    ax.set_ylabel("a very long y label " * 6)
    problems = layout_problems(fig)
    plt.close(fig)
    assert any("overlap" in p for p in problems)
    assert any("longer than its axes" in p for p in problems)


def test_curves_facet_by_granularity_and_trim_all_zero_budgets(tmp_path: Path) -> None:
    df = _crowded_results()
    assert _facets(df) == ["window", "channel", "combined"]
    # one sparsity level only (a methods comparison): one panel with every model
    assert _facets(df[df["sparsity_target"].isin([0.0, 0.7])]) == [""]
    fig_paths = plot_robustness_curves(df, tmp_path)
    assert {p.name for p in fig_paths} == {
        "robustness_curves_linf.png",
        "robustness_curves_linf.svg",
    }


def test_cw_ecdf_legend_counts_never_found_only_when_there_are_some(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import evaluations.present.plots_points as plots_mod

    legends: list[list[str]] = []
    titles: list[str] = []
    real = plots_mod.save_figure

    def capture(fig: Any, out_dir: Path, stem: str) -> list[Path]:
        legends.append([t.get_text() for lg in fig.legends for t in lg.get_texts()])
        titles.append(fig._suptitle.get_text() if fig._suptitle else "")
        return real(fig, out_dir, stem)

    monkeypatch.setattr(plots_mod, "save_figure", capture)
    df, min_norms = synthetic_results(with_l2=True)
    plot_cw_ecdf(min_norms, tmp_path, results=df)
    assert any("never found" in t for t in legends[-1])  # the synthetic data has misses
    found = min_norms.assign(min_norm=min_norms["min_norm"].replace(float("inf"), 0.5))
    plot_cw_ecdf(found, tmp_path, results=df)
    assert not any("never found" in t for t in legends[-1])
    assert "found for every clean-correct example" in titles[-1]


def _ticked_axis(ticks: list[float], labels: list[str], width: float = 3.3) -> Any:
    fig, ax = plt.subplots(figsize=(width, 2.5))
    ax.plot(ticks, [0.5] * len(ticks))
    ax.set_xlim(-0.02 * ticks[-1], 1.03 * ticks[-1])
    ax.set_xticks(ticks, labels=labels)
    fig.tight_layout()
    return fig, ax


@pytest.mark.parametrize(
    "ks",
    [
        [0, 1, 2, 4, 8, 16],  # CIFAR / SVHN Linf grid in 1/255
        [0, 1, 2, 3, 4, 6, 8],  # a finer 1/255 grid
        [0, 0.5, 1, 2, 4, 8, 16, 32],  # geometric over six octaves
    ],
)
def test_thin_tick_labels_removes_overlaps_and_keeps_the_ends(ks: list[float]) -> None:
    ticks = [k / 255 for k in ks]
    labels = [f"{k:g}/255" if k else "0" for k in ks]
    fig, ax = _ticked_axis(ticks, labels)
    assert any("tick labels overlap" in p for p in layout_problems(fig))  # the fault exists
    blanked = thin_tick_labels(fig)
    shown = [t.get_text() for t in ax.get_xticklabels()]
    problems = layout_problems(fig)
    plt.close(fig)
    assert blanked > 0
    assert not [p for p in problems if "tick labels overlap" in p], problems
    assert shown[0] == "0" and shown[-1] == labels[-1]  # both ends stay labelled
    assert list(ax.get_xticks()) == pytest.approx(ticks)  # ticks stay, only text goes
    assert sum(bool(s) for s in shown) >= 3


@pytest.mark.parametrize(
    "ticks", [[0.0, 0.1, 0.2, 0.3], [0.0, 0.05, 0.1, 0.15, 0.2, 0.3], [0.0, 0.25, 0.5, 1.0]]
)
def test_thin_tick_labels_leaves_readable_axes_alone(ticks: list[float]) -> None:
    labels = [f"{t:g}" for t in ticks]
    fig, ax = _ticked_axis(ticks, labels)
    assert thin_tick_labels(fig) == 0
    shown = [t.get_text() for t in ax.get_xticklabels()]
    plt.close(fig)
    assert shown == labels


def test_robustness_curves_on_the_cifar_grid_have_readable_ticks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The CIFAR Linf grid on a linear axis crowded 0, 1/255 and 2/255 (seen on the real-CIFAR run).
    df, _ = synthetic_results(with_l2=False)
    k_255 = {0.0: 0.0, 0.1: 4 / 255, 0.2: 16 / 255}
    df = df.assign(epsilon=df["epsilon"].map(lambda e: k_255[round(float(e), 6)]))
    extra = df[df["epsilon"] == 4 / 255]
    frames = [df] + [extra.assign(epsilon=k / 255) for k in (1, 2, 8)]
    df = pd.concat(frames, ignore_index=True).sort_values(["checkpoint", "attack", "epsilon"])
    with caplog.at_level(logging.WARNING, logger="evaluations.present"):
        paths = plot_robustness_curves(df, tmp_path)
    assert paths
    assert "tick labels overlap" not in caplog.text, caplog.text
