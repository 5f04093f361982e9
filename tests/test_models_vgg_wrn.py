"""models.vgg_wrn: plain state dicts of the public VGG-16-BN (CIFAR) and RobustBench WideResNet load as is.

The public definitions are written out here (kuangliu/pytorch-cifar ``models/vgg.py``; RobustBench
``model_zoo/architectures/wide_resnet.py``) with random weights; the product's model must accept
their ``state_dict()`` without renaming and compute the same logits.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_sparse.checkpoint import load_checkpoint
from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model, load_state_dict_into, vgg_wrn
from tests.core_helpers import single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


# ---------------------------------------------------------------------- public VGG (kuangliu)
class VGG(nn.Module):
    cfg: ClassVar[list[int | str]] = [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        "M",
    ]

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for x in self.cfg:
            if x == "M":
                layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                layers += [
                    nn.Conv2d(in_channels, int(x), kernel_size=3, padding=1),
                    nn.BatchNorm2d(int(x)),
                    nn.ReLU(inplace=True),
                ]
                in_channels = int(x)
        layers += [nn.AvgPool2d(kernel_size=1, stride=1)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, 10)

    def forward(self, x: Tensor) -> Tensor:
        out = self.features(x)
        out = out.view(out.size(0), -1)
        return self.classifier(out)  # type: ignore[no-any-return]


# ------------------------------------------------------------------ public WRN (RobustBench)
class BasicBlock(nn.Module):
    def __init__(
        self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(
            in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(
            out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False
        )
        self.droprate = drop_rate
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (
            (not self.equalInOut)
            and nn.Conv2d(
                in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False
            )
        ) or None

    def forward(self, x: Tensor) -> Tensor:
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)  # type: ignore[misc]


class NetworkBlock(nn.Module):
    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        layers = [
            BasicBlock((i == 0 and in_planes) or out_planes, out_planes, (i == 0 and stride) or 1)
            for i in range(nb_layers)
        ]
        self.layer = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)  # type: ignore[no-any-return]


class WideResNet(nn.Module):
    def __init__(self, depth: int = 34, num_classes: int = 10, widen_factor: int = 10) -> None:
        super().__init__()
        n_channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, n_channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, n_channels[0], n_channels[1], 1)
        self.block2 = NetworkBlock(n, n_channels[1], n_channels[2], 2)
        self.block3 = NetworkBlock(n, n_channels[2], n_channels[3], 2)
        self.bn1 = nn.BatchNorm2d(n_channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(n_channels[3], num_classes)
        self.nChannels = n_channels[3]

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = self.block3(self.block2(self.block1(out)))
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        out = out.view(-1, self.nChannels)
        return self.fc(out)  # type: ignore[no-any-return]


def _randomize(net: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(1 + 0.2 * torch.randn(c, generator=gen))
                module.bias.copy_(0.1 * torch.randn(c, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(c, generator=gen))
    return net.eval()


def _x(n: int = 2) -> Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(3))  # (n, 3, 32, 32)


def test_public_vgg16_bn_state_dict_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    public = _randomize(VGG(), 0)
    path = tmp_path / "vgg.pt"
    torch.save({"module." + k: v for k, v in public.state_dict().items()}, path)
    ckpt = load_checkpoint(path, arch="vgg16_bn_cifar", dataset="cifar10", normalize="none")
    with torch.no_grad():
        torch.testing.assert_close(ckpt.model(_x()), public(_x()), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("arch", "depth"), [("wrn28_10", 28), ("wrn34_10", 34)])
@pytest.mark.parametrize("widen_factor", [1, 2])
def test_public_wide_resnet_state_dict_loads(
    tmp_path: Path, arch: str, depth: int, widen_factor: int
) -> None:
    torch.manual_seed(depth + widen_factor)
    public = _randomize(WideResNet(depth, 10, widen_factor), depth)
    path = tmp_path / "wrn.pt"
    torch.save({"_orig_mod." + k: v for k, v in public.state_dict().items()}, path)
    ckpt = load_checkpoint(
        path,
        arch=arch,
        dataset="cifar10",
        normalize="none",
        arch_kwargs={"widen_factor": widen_factor},
    )
    with torch.no_grad():
        torch.testing.assert_close(ckpt.model(_x()), public(_x()), rtol=1e-4, atol=1e-5)


def test_wrn_depth_mismatch_names_the_key() -> None:
    public = WideResNet(28, 10, 1)
    model = create_model("wrn34_10", num_classes=10, widen_factor=1)
    with pytest.raises(UserError, match=r"lacks tensor 'net\.block1\.layer\.4\.bn1\.weight'"):
        load_state_dict_into(model, public.state_dict())


@pytest.mark.parametrize(
    ("arch", "kwargs", "params_m"),
    [("vgg16_bn_cifar", {}, 14.73), ("wrn28_10", {}, 36.48), ("wrn34_10", {}, 46.16)],
)
def test_published_sizes(arch: str, kwargs: dict[str, float], params_m: float) -> None:
    with torch.device("meta"):  # no memory for 46M parameters
        model = create_model(arch, num_classes=10, **kwargs)
    n = sum(p.numel() for p in model.parameters())
    assert math.isclose(n / 1e6, params_m, abs_tol=0.01)


@pytest.mark.parametrize(("width", "size"), [(0.125, 32), (0.25, 64)])
def test_vgg_tiny_width_any_size(width: float, size: int) -> None:
    model = create_model("vgg16_bn_cifar", num_classes=3, width=width).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, size, size)).shape == (2, 3)


@pytest.mark.parametrize("depth", [30, 4, 27])
def test_wrn_bad_depth(depth: int) -> None:
    with pytest.raises(ValueError, match="6n \\+ 4"):
        vgg_wrn.WideResNet(depth, widen_factor=1)
