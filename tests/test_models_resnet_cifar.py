"""Tests for robustbench_sparse.models.resnet_cifar (option-B shortcuts)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustbench_sparse.models import CifarResNet, create_model


@pytest.mark.parametrize(("name", "n"), [("resnet20", 3), ("resnet32", 5), ("resnet56", 9)])
def test_depth_and_option_b_shortcuts(name: str, n: int) -> None:
    net = create_model(name, num_classes=10).net
    assert isinstance(net, CifarResNet)
    convs = {k: m for k, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    three = [m for m in convs.values() if m.kernel_size == (3, 3)]
    one = [k for k, m in convs.items() if m.kernel_size == (1, 1)]
    assert len(three) + 1 == 6 * n + 2  # 3x3 convs + the fc layer = the paper's depth
    assert one == ["layer2.0.downsample.0", "layer3.0.downsample.0"]
    assert [net.layer1[0].conv1.out_channels, net.layer2[0].conv1.out_channels] == [16, 32]
    assert net.fc.in_features == 64


def test_resnet20_parameter_count_and_shapes() -> None:
    net = create_model("resnet20", num_classes=10).net
    n_params = sum(p.numel() for p in net.parameters())
    assert 270_000 < n_params < 275_000  # 0.27M (option B adds 2 small 1x1 convs + BNs)
    feats: list[tuple[int, ...]] = []
    for layer in (net.layer1, net.layer2, net.layer3):
        layer.register_forward_hook(lambda m, i, o: feats.append(tuple(o.shape[1:])))
    with torch.no_grad():
        net.eval()(torch.rand(2, 3, 32, 32))
    assert feats == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
