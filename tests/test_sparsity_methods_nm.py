"""nm granularity: N:M along input channels on the cubic schedule (NMSparsifier)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from robustbench_sparse.adversarial import AdversarialConfig
from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model
from robustbench_sparse.sparsity import Granularity, SparsityConfig, create_sparsifier
from robustbench_sparse.sparsity.masks import nm_violations
from robustbench_sparse.sparsity.methods import NMSparsifier
from robustbench_sparse.train_job import run_train_job
from tests.core_helpers import single_thread, tiny_digits, tiny_job


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _groups(weight: torch.Tensor, m: int = 4) -> torch.Tensor:
    w4 = weight if weight.ndim == 4 else weight[:, :, None, None]
    return (w4 != 0).permute(0, 2, 3, 1).reshape(-1, m).sum(dim=1)


def test_config_validates_nm_and_target() -> None:
    assert SparsityConfig(target=0.5, granularity="nm").nm_pair == (2, 4)
    assert SparsityConfig(target=0.8, granularity="nm", nm=" 1:4").nm == "1:4"
    assert SparsityConfig(target=0.8, granularity="nm", nm="1:4").label == "nm1of4"
    assert SparsityConfig(granularity="nm").dense  # target 0 = the dense baseline
    with pytest.raises(UserError, match="N:M"):
        SparsityConfig(target=0.5, granularity="nm", nm="4:2")
    with pytest.raises(UserError, match=r">= 0\.5"):
        SparsityConfig(target=0.3, granularity="nm")
    with pytest.raises(UserError, match="campfire only"):
        SparsityConfig(target=0.5, granularity="nm", method="hydra")


def test_factory_picks_nm_and_first_conv_with_three_channels_stays_dense() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=3)
    cfg = SparsityConfig(target=0.5, granularity="nm", prune_first_conv=True, end=0.0)
    sp = create_sparsifier(cfg, 4)
    assert isinstance(sp, NMSparsifier)
    sp.prepare(model)
    assert "net.conv1.weight" not in sp.layers  # C = 3: not a multiple of 4, left dense
    report = sp.report()
    first = next(layer for layer in report.layers if layer.name == "net.conv1.weight")
    assert not first.pruned and first.granularity == "dense"
    assert report.numel_all > report.numel_pruned  # the dense first conv is in the denominator
    for name, weight in sp.weights.items():
        assert set(_groups(weight.detach()).tolist()) == {2}, name
        assert nm_violations(weight.detach() != 0, (2, 4)) == 0


def test_nm_above_half_kills_filters_with_their_batchnorm() -> None:
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=10, in_channels=1, width=0.25).eval()
    sp = create_sparsifier(SparsityConfig(target=0.75, granularity="nm", end=0.0), 4)
    sp.prepare(model)
    conv, bn = model.net.conv2[0], model.net.conv2[1]  # type: ignore[index]
    dead = (conv.weight.reshape(conv.out_channels, -1) == 0).all(dim=1)
    assert int(dead.sum()) == conv.out_channels // 2
    assert not bn.weight[dead].any() and not bn.bias[dead].any()
    x = torch.rand(3, 1, 8, 8)
    out = model.net.conv2(model.net.conv1(model.normalize(x)))  # type: ignore[operator]
    assert not out[:, dead].any()  # the channel is exactly zero: thin export can drop it


@pytest.mark.parametrize("adversarial", [None, "fast"])
def test_nm_trains_on_digits_and_pruned_weights_stay_zero(
    tmp_path: Path, adversarial: str | None
) -> None:
    job = tiny_job(0.5, "nm", epochs=2, start=0.0, end=1.0, update_every=2)
    if adversarial is not None:
        job = dataclasses.replace(
            job, adversarial=AdversarialConfig(method=adversarial, eps=0.1, steps=1)
        )
    ckpt = run_train_job(job, tmp_path / "nm", progress=False, data=tiny_digits())
    assert ckpt.granularity == "nm"
    state = ckpt.model.state_dict()
    pruned = [str(n) for n in ckpt.meta["pruned_layers"]]
    assert pruned and "net.conv1.0.weight" not in pruned  # 1-channel input: dense
    for name in pruned:
        mask = ckpt.masks[name]
        assert set(_groups(mask).tolist()) == {2}
        assert not state[name][~mask].any()  # pruned weights exactly zero after training


def test_nm_sparsifier_needs_nm_granularity() -> None:
    with pytest.raises(ValueError, match="nm"):
        NMSparsifier(SparsityConfig(target=0.5, granularity=Granularity.WINDOW), 4)


def test_nm_keeps_masks_frozen_after_end() -> None:
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=10, in_channels=1, width=0.25)
    sp = create_sparsifier(SparsityConfig(target=0.5, granularity="nm", start=0, end=1), 2)
    sp.prepare(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    masks = None
    for step in range(6):
        loss = model(torch.rand(4, 1, 8, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sp.step(opt)
        if step == 2:
            masks = sp.masks
    assert sp.frozen and masks is not None
    for name, mask in sp.masks.items():
        assert torch.equal(mask, masks[name])
        assert not sp.weights[name].detach()[~mask].any()
    assert isinstance(model, nn.Module)
