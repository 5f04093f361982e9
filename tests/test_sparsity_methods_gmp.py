"""gmp: Zhu & Gupta unstructured gradual magnitude pruning (== campfire + unstructured)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from robustbench_sparse.sparsity import (
    CampfireSparsifier,
    Granularity,
    PruningMethod,
    SparsityConfig,
    create_sparsifier,
    kept_per_group,
)
from robustbench_sparse.sparsity.methods import GMPSparsifier
from robustbench_sparse.train_job import run_train_job
from tests.core_helpers import inspect_json, method_job, single_thread, tiny_digits


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),
    )


def _train(sparsifier: CampfireSparsifier, steps: int) -> nn.Module:
    model = _net()
    sparsifier.prepare(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.rand(16, 1, 8, 8, generator=gen)
        y = torch.randint(0, 10, (16,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sparsifier.step(opt)
    return model


def test_gmp_is_campfire_unstructured_bit_for_bit() -> None:
    common = {"target": 0.8, "start": 0.0, "end": 2.0, "update_every": 2}
    gmp = create_sparsifier(SparsityConfig(method="gmp", **common), 5)  # type: ignore[arg-type]
    camp = create_sparsifier(SparsityConfig(granularity="unstructured", **common), 5)  # type: ignore[arg-type]
    assert isinstance(gmp, GMPSparsifier) and type(camp) is CampfireSparsifier
    m1, m2 = _train(gmp, 14), _train(camp, 14)
    assert gmp.frozen and camp.frozen
    for name, mask in gmp.masks.items():
        assert torch.equal(mask, camp.masks[name]), name
    for (n1, p1), (_, p2) in zip(m1.named_parameters(), m2.named_parameters(), strict=True):
        assert torch.equal(p1, p2), n1


def test_gmp_is_layerwise_unstructured_at_the_target() -> None:
    cfg = SparsityConfig(target=0.8, method="gmp", start=0.0, end=1.0, update_every=1)
    sp = create_sparsifier(cfg, 4)
    model = _train(sp, 6)
    params = dict(model.named_parameters())
    for name, mask in sp.masks.items():
        numel = mask.numel()
        # one group per layer: exactly kept_per_group(numel) anywhere in the tensor
        assert int(mask.sum()) == kept_per_group(numel, 0.8)
        assert int((params[name] != 0).sum()) <= kept_per_group(numel, 0.8)
        # and not balanced per kernel (unstructured): kernel counts vary
        if mask.ndim == 4:
            per_kernel = mask.reshape(mask.shape[0] * mask.shape[1], -1).sum(1)
            assert per_kernel.min() != per_kernel.max()


def test_gmp_config_normalises_granularity_and_labels() -> None:
    cfg = SparsityConfig(target=0.5, method="gmp", granularity="window")
    assert cfg.method is PruningMethod.GMP
    assert cfg.granularity is Granularity.UNSTRUCTURED
    assert cfg.label == "gmp"
    assert SparsityConfig(target=0.5, granularity="unstructured").label == "unstructured"


def test_gmp_checkpoint_passes_inspect(tmp_path: Path) -> None:
    ckpt = run_train_job(method_job("gmp"), tmp_path / "gmp", progress=False, data=tiny_digits())
    assert ckpt.meta["method"] == "gmp" and ckpt.granularity == "gmp"
    out = inspect_json(tmp_path / "gmp")
    report = out["sparsity_report"]
    assert isinstance(report, dict)
    assert out["granularity"] == "gmp" and report["method"] == "gmp"
    pruned = [layer for layer in report["layers"] if layer["pruned"]]
    assert pruned
    for layer in pruned:
        assert layer["granularity"] == "unstructured"
        assert layer["nnz"] == kept_per_group(layer["numel"], 0.7)
        assert layer["achieved"] == pytest.approx(layer["rounded_target"])
