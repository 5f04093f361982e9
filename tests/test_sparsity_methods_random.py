"""random: masks drawn at initialization and fixed; uniform and ERK layer-wise densities."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from robustbench_sparse.sparsity import LayerDistribution, SparsityConfig, create_sparsifier
from robustbench_sparse.sparsity.allocation import erk_densities, erk_raw, kept_count
from robustbench_sparse.sparsity.methods import RandomSparsifier
from robustbench_sparse.train_job import run_train_job
from tests.core_helpers import inspect_json, method_job, single_thread, tiny_digits


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


SHAPES = [(16, 3, 3, 3), (32, 16, 3, 3), (64, 32, 3, 3), (64, 64, 1, 1), (10, 64)]


@pytest.mark.parametrize("density", [0.05, 0.3, 0.5, 0.9])
def test_erk_meets_the_global_density_and_caps_dense_layers(density: float) -> None:
    dens = erk_densities(SHAPES, density)
    numels = [math.prod(s) for s in SHAPES]
    assert sum(d * n for d, n in zip(dens, numels, strict=True)) == pytest.approx(
        density * sum(numels)
    )
    assert all(0.0 < d <= 1.0 for d in dens)
    # uncapped layers are proportional to the ERK factor with one common scale
    raws = [erk_raw(s) for s in SHAPES]
    scales = {round(d / r, 9) for d, r in zip(dens, raws, strict=True) if d < 1.0}
    assert len(scales) <= 1
    # a capped (dense) layer is one whose scaled factor would exceed 1
    if scales:
        eps = scales.pop()
        for d, r in zip(dens, raws, strict=True):
            assert (d == 1.0) == (eps * r >= 1.0 - 1e-9)


def test_erk_caps_small_layers_at_high_density() -> None:
    dens = erk_densities(SHAPES, 0.9)
    assert dens[0] == 1.0  # the 16x3x3x3 conv has the largest ERK factor
    assert dens[2] < 1.0


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 1),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_masks_are_drawn_at_prepare_and_never_change(distribution: str) -> None:
    cfg = SparsityConfig(target=0.7, method="random", random_distribution=distribution, end=1.0)
    sp = create_sparsifier(cfg, 3)
    assert isinstance(sp, RandomSparsifier)
    model = _net()
    torch.manual_seed(5)
    sp.prepare(model)
    assert sp.frozen and sp.current_sparsity == 0.7
    before = sp.masks
    densities = sp.layer_densities
    params = dict(model.named_parameters())
    total_kept = total = 0
    for name, mask in before.items():
        assert int(mask.sum()) == kept_count(mask.numel(), densities[name])
        assert torch.equal(params[name] != 0, mask)  # pruned at initialization
        total_kept += int(mask.sum())
        total += mask.numel()
    assert total_kept / total == pytest.approx(0.3, abs=len(before) / total)
    if distribution == "uniform":
        assert all(d == pytest.approx(0.3) for d in densities.values())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    for _ in range(10):  # past `end`: nothing is ever recomputed
        opt.zero_grad()
        model(torch.rand(8, 1, 8, 8)).sum().backward()
        opt.step()
        sp.step(opt)
    after = sp.masks
    for name in before:
        assert torch.equal(before[name], after[name])
        assert not params[name][~after[name]].any()


def test_masks_follow_the_global_seed() -> None:
    def masks(seed: int) -> dict[str, torch.Tensor]:
        sp = create_sparsifier(SparsityConfig(target=0.5, method="random"), 2)
        model = _net()
        torch.manual_seed(seed)
        sp.prepare(model)
        return sp.masks

    a, b, c = masks(0), masks(0), masks(1)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_random_config_label_and_round_trip() -> None:
    cfg = SparsityConfig(target=0.7, method="random", random_distribution="ERK")
    assert cfg.random_distribution is LayerDistribution.ERK
    assert cfg.label == "random-erk"
    assert SparsityConfig.from_dict(cfg.to_dict()) == cfg


def test_random_erk_checkpoint_passes_inspect(tmp_path: Path) -> None:
    job = method_job("random", random_distribution="erk")
    ckpt = run_train_job(job, tmp_path / "r", progress=False, data=tiny_digits())
    assert ckpt.meta["method"] == "random" and ckpt.granularity == "random-erk"
    report = inspect_json(tmp_path / "r")["sparsity_report"]
    assert isinstance(report, dict)
    pruned = [layer for layer in report["layers"] if layer["pruned"]]
    shapes = [tuple(layer["shape"]) for layer in pruned]
    for layer, density in zip(pruned, erk_densities(shapes, 0.3), strict=True):
        assert layer["granularity"] == "random-erk"
        assert layer["target"] == pytest.approx(1.0 - density)
        assert layer["nnz"] == kept_count(layer["numel"], density)
    assert report["achieved_pruned"] == pytest.approx(0.7, abs=1e-3)
    # ERK allocation is not uniform on small_cnn
    assert len({round(layer["target"], 4) for layer in pruned}) > 1
