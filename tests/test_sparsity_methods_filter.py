"""filter: gradual whole-filter pruning; the consuming BatchNorm is masked so channels are exactly 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from robustbench_sparse.models import create_model
from robustbench_sparse.sparsity import SparsityConfig, create_sparsifier, kept_per_group
from robustbench_sparse.sparsity.config import FilterNorm, PruningMethod
from robustbench_sparse.sparsity.methods import (
    FilterSparsifier,
    conv_bn_pairs,
    export_thin,
    filter_mask,
    filter_sparsity_figures,
)
from robustbench_sparse.train_job import run_train_job
from tests.core_helpers import inspect_json, method_job, single_thread, tiny_digits


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return create_model("small_cnn", num_classes=10, in_channels=1, width=0.25)


def test_conv_bn_pairs_small_cnn_and_resnet() -> None:
    pairs = conv_bn_pairs(_small_cnn())
    assert pairs == {f"net.conv{i}.0": f"net.conv{i}.1" for i in range(1, 6)}
    res = conv_bn_pairs(create_model("resnet20", num_classes=10, in_channels=3))
    assert res["net.conv1"] == "net.bn1"
    assert res["net.layer1.0.conv1"] == "net.layer1.0.bn1"
    assert res["net.layer1.0.conv2"] == "net.layer1.0.bn2"
    assert res["net.layer2.0.downsample.0"] == "net.layer2.0.downsample.1"


@pytest.mark.parametrize("norm", [FilterNorm.L2, FilterNorm.L1])
def test_filter_mask_keeps_whole_filters_by_norm_and_is_monotone(norm: FilterNorm) -> None:
    torch.manual_seed(0)
    w = torch.randn(10, 4, 3, 3)
    mask = filter_mask(w, 0.5, norm)
    per_filter = mask.reshape(10, -1)
    assert bool((per_filter.all(1) | ~per_filter.any(1)).all())  # all or nothing per filter
    kept = per_filter.all(1)
    assert int(kept.sum()) == kept_per_group(10, 0.5)
    flat = w.reshape(10, -1)
    norms = flat.abs().sum(1) if norm is FilterNorm.L1 else flat.norm(dim=1)
    assert norms[kept].min() >= norms[~kept].max()
    # monotone: a dead filter never returns even when it becomes the largest
    w2 = w.clone()
    w2[~kept] = 100.0
    again = filter_mask(w2, 0.7, norm, previous=mask)
    assert not (again & ~mask).any()
    assert int(again.reshape(10, -1).all(1).sum()) == kept_per_group(10, 0.7)


def _train(model: nn.Module, sp: FilterSparsifier, steps: int) -> list[float]:
    sp.prepare(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(0)
    seen = []
    model.train()
    for _ in range(steps):
        x = torch.rand(16, 1, 8, 8, generator=gen)
        y = torch.randint(0, 10, (16,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sp.step(opt)
        seen.append(sp.current_sparsity)
    return seen


def test_pruned_filters_output_exactly_zero_after_batchnorm() -> None:
    model = _small_cnn()
    cfg = SparsityConfig(target=0.6, method="filter", start=0.0, end=2.0, update_every=2)
    sp = create_sparsifier(cfg, 5)
    assert isinstance(sp, FilterSparsifier)
    schedule = _train(model, sp, 14)
    assert sp.frozen
    assert schedule == sorted(schedule) and 0 < schedule[1] < schedule[-1] == 0.6  # gradual
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    hooks = []
    for conv_name in (n.rsplit(".", 1)[0] for n in sp.masks):
        bn_name = sp.bn_of[f"{conv_name}.weight"]
        assert bn_name is not None

        def hook(_m: nn.Module, _i: object, out: torch.Tensor, key: str = bn_name) -> None:
            outputs[key] = out.detach()

        hooks.append(modules[bn_name].register_forward_hook(hook))
    x = torch.rand(8, 1, 8, 8)
    for mode in (True, False):  # train (batch statistics) and eval (running statistics)
        model.train(mode)
        outputs.clear()
        model(x)
        for name, mask in sp.masks.items():
            dead = ~mask.reshape(mask.shape[0], -1).any(1)  # (K,)
            assert int((~dead).sum()) == kept_per_group(mask.shape[0], 0.6)
            bn_out = outputs[sp.bn_of[name]]  # type: ignore[index]
            assert bool((bn_out[:, dead] == 0).all()), name  # exactly zero
            assert bool((bn_out[:, ~dead] != 0).any()), name
            bn = modules[sp.bn_of[name]]  # type: ignore[index]
            assert not bn.weight[dead].any() and not bn.bias[dead].any()
    for h in hooks:
        h.remove()


def test_state_dict_restores_the_batchnorm_masks() -> None:
    model = _small_cnn()
    cfg = SparsityConfig(target=0.5, method="filter", start=0.0, end=1.0, update_every=1)
    sp = create_sparsifier(cfg, 3)
    _train(model, sp, 4)
    fresh = _small_cnn()
    again = create_sparsifier(cfg, 3)
    again.prepare(fresh)
    again.load_state_dict(sp.state_dict())
    modules = dict(fresh.named_modules())
    for name, mask in sp.masks.items():
        dead = ~mask.reshape(mask.shape[0], -1).any(1)
        bn = modules[name.replace(".0.weight", ".1")]
        assert not bn.weight[dead].any() and not bn.bias[dead].any()  # type: ignore[index]
        assert bn.weight[~dead].all()  # type: ignore[index]


def test_linear_layers_are_not_filter_pruned() -> None:
    model = _small_cnn()
    cfg = SparsityConfig(target=0.5, method="filter", prune_classifier=True, end=0.0)
    sp = create_sparsifier(cfg, 1)
    sp.prepare(model)
    assert "net.fc.weight" not in sp.pruned_names
    assert sp.pruned_names == [f"net.conv{i}.0.weight" for i in range(2, 6)]


def test_export_thin_is_smaller_and_matches_the_masked_model() -> None:
    model = _small_cnn()
    sp = create_sparsifier(
        SparsityConfig(target=0.5, method="filter", start=0.0, end=1.0, update_every=1), 3
    )
    _train(model, sp, 6)
    model.eval()
    thin = export_thin(model, (1, 8, 8))
    x = torch.rand(12, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(thin(x), model(x), atol=1e-5, rtol=1e-4)
    n_masked = sum(p.numel() for p in model.parameters())
    n_thin = sum(p.numel() for p in thin.parameters())
    assert n_thin < 0.5 * n_masked
    assert thin.net.conv2[0].out_channels == kept_per_group(16, 0.5)  # type: ignore[union-attr, index]
    assert thin.net.conv3[0].in_channels == kept_per_group(16, 0.5)  # type: ignore[union-attr, index]


def test_export_thin_thins_a_filter_pruned_resnet() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=3).eval()
    sp = create_sparsifier(SparsityConfig(target=0.5, method="filter", end=0.0), 1)
    sp.prepare(model)
    thin = export_thin(model, (3, 16, 16))
    assert thin.net.layer1[0].conv1.out_channels == kept_per_group(16, 0.5)  # type: ignore[union-attr, index]
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(thin(x), model(x), atol=1e-5, rtol=1e-4)


def test_filter_checkpoint_passes_inspect(tmp_path: Path) -> None:
    ckpt = run_train_job(method_job("filter"), tmp_path / "f", progress=False, data=tiny_digits())
    assert ckpt.meta["method"] == "filter" and ckpt.granularity == "filter"
    report = inspect_json(tmp_path / "f")["sparsity_report"]
    assert isinstance(report, dict) and report["granularity"] == "filter"
    pruned = [layer for layer in report["layers"] if layer["pruned"]]
    assert len(pruned) == 4
    state = ckpt.model.state_dict()
    for layer in pruned:
        k = layer["shape"][0]
        assert layer["granularity"] == "filter"
        assert layer["filters_kept"] == kept_per_group(k, 0.7)
        assert layer["achieved"] == pytest.approx(layer["rounded_target"])
        bn = layer["name"].replace(".0.weight", ".1")
        dead = (state[layer["name"]].reshape(k, -1) == 0).all(1)
        assert not state[f"{bn}.weight"][dead].any() and not state[f"{bn}.bias"][dead].any()
    figures = inspect_json(tmp_path / "f")["filter_sparsity"]  # both figures, named
    assert isinstance(figures, dict)
    assert figures["filters_masked"] == sum(
        layer["shape"][0] - layer["filters_kept"] for layer in pruned
    )
    assert figures["thinned_removed"] > figures["filter_sparsity"]


# ------------------------------------------------- issue 29 (9): both figures, each named
def _expected_thinned(model: nn.Module) -> float:
    """Removed fraction of conv/linear weights counted by hand: dead filters and dead inputs."""
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    total = kept = 0
    alive_in: torch.Tensor | None = None  # (C,) input channels alive
    for layer in layers:
        w = layer.weight.detach()
        alive_out = (w.reshape(w.shape[0], -1) != 0).any(dim=1)  # (K,)
        cols = alive_in if alive_in is not None else torch.ones(w.shape[1], dtype=torch.bool)
        per = w[0, 0].numel() if w.ndim == 4 else 1
        total += w.numel()
        kept += int(alive_out.sum()) * int(cols.sum()) * per
        alive_in = alive_out if isinstance(layer, nn.Conv2d) else None
    return 1.0 - kept / total


@pytest.mark.parametrize(("width", "target"), [(1.0, 0.5), (0.5, 0.5), (1.0, 0.3), (0.5, 0.75)])
def test_filter_sparsity_and_weights_removed_by_thinning(width: float, target: float) -> None:
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=10, in_channels=1, width=width).eval()
    assert filter_sparsity_figures(model, (1, 8, 8)) is None  # dense: no figure
    sp = create_sparsifier(SparsityConfig(target=target, method=PruningMethod.FILTER, end=0.0), 1)
    sp.prepare(model)
    figures = filter_sparsity_figures(model, (1, 8, 8))
    assert figures is not None
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)][1:]  # conv1 stays dense
    expected_masked = sum(m.out_channels - kept_per_group(m.out_channels, target) for m in convs)
    assert figures["filters_masked"] == expected_masked
    assert figures["filters"] == sum(m.out_channels for m in convs)
    assert figures["filter_sparsity"] == pytest.approx(target, abs=0.1)
    # thinning also drops the next layer's input channels: well above the filter sparsity
    assert figures["thinned_removed"] == pytest.approx(_expected_thinned(model), abs=1e-9)
    assert figures["thinned_removed"] > figures["filter_sparsity"] + 0.1
