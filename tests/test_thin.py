"""thin_model: dead channels removed physically, logits allclose, MACs equal the flop counter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from robustbench_sparse.models import create_model
from robustbench_sparse.sparsity import Granularity, SparsityConfig, compute_mask, create_sparsifier
from robustbench_sparse.thin import count_macs, count_params, thin_model
from tests.core_helpers import single_thread


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _random_bn(model: nn.Module) -> None:
    """Trained-looking BatchNorms (an identity BN would hide a wrong channel mapping)."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)


def _filter_pruned(arch: str, in_channels: int, target: float = 0.5) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, in_channels=in_channels).eval()
    _random_bn(model)
    sp = create_sparsifier(SparsityConfig(target=target, method="filter", end=0.0), 1)
    sp.prepare(model)  # prunes at step 0: whole filters + their BatchNorm affine
    return model


def _flop_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *shape))
    return int(counter.get_total_flops()) // 2


def test_small_cnn_chain_thins_allclose_and_counts_match_flop_counter() -> None:
    model = _filter_pruned("small_cnn", 1)
    shape = (1, 8, 8)
    result = thin_model(model, shape)
    thin = result.model
    x = torch.rand(16, *shape)
    with torch.no_grad():
        assert torch.allclose(thin(x), model(x), atol=1e-5, rtol=1e-4)
    net = thin.net  # type: ignore[union-attr]
    assert net.conv2[0].out_channels == 32 and net.conv3[0].in_channels == 32
    assert net.fc.in_features == 64  # the classifier lost the dead features, kept its 10 logits
    assert net.fc.out_features == 10
    assert result.params_after == count_params(thin) < 0.35 * result.params_before
    assert result.macs_after == count_macs(thin, shape) == _flop_macs(thin, shape)
    assert result.macs_before == _flop_macs(model, shape)
    assert result.widths["net.conv2.1"] == {"features": 32}
    assert "net.conv1.0" not in result.widths  # the dense first conv keeps its width


def test_resnet_channel_dead_in_its_whole_coupled_group_is_removed() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=3).eval()
    _random_bn(model)
    net = model.net  # type: ignore[union-attr]
    stream = [net.conv1, net.bn1] + [m for b in net.layer1 for m in (b.conv2, b.bn2)]
    inner = [net.layer2[1].conv1, net.layer2[1].bn1]
    with torch.no_grad():
        for module in stream:  # residual channel 3 of stage 1, dead in every producer
            module.weight[3] = 0
            if isinstance(module, nn.BatchNorm2d):
                module.bias[3] = 0
        for module in inner:  # block-internal channels 0..9 of layer2.1
            module.weight[:10] = 0
            if isinstance(module, nn.BatchNorm2d):
                module.bias[:10] = 0
        net.layer2[0].bn2.weight[5] = 0  # dead in one block only: must stay
        net.layer2[0].bn2.bias[5] = 0
        net.layer2[0].conv2.weight[5] = 0
    shape = (3, 16, 16)
    result = thin_model(model, shape)
    thin = result.model.net  # type: ignore[union-attr]
    assert thin.conv1.out_channels == 15 and thin.layer1[2].bn2.num_features == 15
    assert thin.layer2[0].conv1.in_channels == 15  # the next stage reads 15 channels
    assert thin.layer2[0].downsample[0].in_channels == 15
    assert thin.layer2[1].conv1.out_channels == 22 and thin.layer2[1].conv2.in_channels == 22
    assert thin.layer2[0].conv2.out_channels == 32  # coupled with live producers: kept
    x = torch.rand(8, *shape)
    with torch.no_grad():
        assert torch.allclose(result.model(x), model(x), atol=1e-5, rtol=1e-4)
    assert result.macs_after == _flop_macs(result.model, shape) < result.macs_before


@pytest.mark.parametrize("granularity", [Granularity.WINDOW, Granularity.CHANNEL])
def test_campfire_masks_leave_nothing_to_remove(granularity: Granularity) -> None:
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=10, in_channels=1, width=0.25).eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)][1:]
    with torch.no_grad():
        for conv in convs:
            conv.weight.mul_(compute_mask(conv.weight, 0.9, granularity))
    result = thin_model(model, (1, 8, 8))
    assert result.removed == {} and result.widths == {}
    assert result.params_after == result.params_before


def test_a_dead_layer_keeps_one_channel() -> None:
    model = _filter_pruned("small_cnn", 1)
    conv, bn = model.net.conv3[0], model.net.conv3[1]  # type: ignore[index, union-attr]
    with torch.no_grad():
        conv.weight.zero_()
        bn.weight.zero_()
        bn.bias.zero_()
    result = thin_model(model, (1, 8, 8))
    assert result.model.net.conv3[0].out_channels == 1  # type: ignore[index, union-attr]
