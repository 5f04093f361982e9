"""models.cifar_resnets: a plain state dict of the public CIFAR ResNet-18 / PreAct ResNet-18 loads as is.

The public definitions are written out here (kuangliu/pytorch-cifar ``models/resnet.py`` and
``models/preact_resnet.py``; RobustBench / locuslab fast_adversarial ``PreActResNet18``), with random
weights, so the test checks the key names *and* that the product's model computes the same logits.
Issue 13, acceptance 2: the ResNet-18 state dict with each wrapper prefix loads and is attacked, and
raw-[0, 1] vs normalized inputs give different, correct logits.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks import get_attack
from robustbench_sparse.checkpoint import load_checkpoint
from robustbench_sparse.datasets import dataset_info
from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model, load_state_dict_into
from tests.core_helpers import single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


# ------------------------------------------------------------- public definitions (kuangliu style)
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(
                    in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False
                ),
                nn.BatchNorm2d(self.expansion * planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    def __init__(
        self, block: type[nn.Module], num_blocks: list[int], num_classes: int = 10
    ) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512, num_classes)

    def _make_layer(
        self, block: type[nn.Module], planes: int, num_blocks: int, stride: int
    ) -> nn.Sequential:
        strides = [stride] + [1] * (num_blocks - 1)
        layers = []
        for s in strides:
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        out = out.view(out.size(0), -1)
        return self.linear(out)  # type: ignore[no-any-return]


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(
            in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(
                    in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False
                )
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out += shortcut
        return out


class PreActResNet(nn.Module):
    def __init__(self, final_bn: bool, num_classes: int = 10) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(64, 1)
        self.layer2 = self._make_layer(128, 2)
        self.layer3 = self._make_layer(256, 2)
        self.layer4 = self._make_layer(512, 2)
        if final_bn:  # RobustBench / fast_adversarial; kuangliu's has none
            self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def _make_layer(self, planes: int, stride: int) -> nn.Sequential:
        layers = []
        for s in (stride, 1):
            layers.append(PreActBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        if hasattr(self, "bn"):
            out = F.relu(self.bn(out))
        out = F.avg_pool2d(out, 4)
        out = out.view(out.size(0), -1)
        return self.linear(out)  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------ helpers
def _randomize(net: nn.Module, seed: int) -> nn.Module:
    """Random BN affine parameters and statistics on top of the default (random) conv/linear init,
    so a wrongly mapped tensor of any kind changes the logits."""
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


def _images(n: int = 4) -> Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # (n, 3, 32, 32)


def _normalized(x: Tensor) -> Tensor:
    info = dataset_info("cifar10")
    mean = torch.tensor(info.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(info.std).reshape(1, 3, 1, 1)
    return (x - mean) / std


# -------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module._orig_mod."])
def test_public_resnet18_state_dict_loads_and_is_attacked(tmp_path: Path, prefix: str) -> None:
    torch.manual_seed(0)
    public = _randomize(ResNet(BasicBlock, [2, 2, 2, 2]), seed=0)
    path = tmp_path / "resnet18.pt"
    torch.save({prefix + k: v for k, v in public.state_dict().items()}, path)
    x = _images()
    raw = load_checkpoint(path, arch="resnet18_cifar", dataset="cifar10", normalize="none")
    norm = load_checkpoint(path, arch="resnet18_cifar", dataset="cifar10", normalize="dataset")
    assert raw.meta["normalization"]["source"] == "none"
    assert norm.meta["normalization"]["source"] == "dataset"
    with torch.no_grad():
        want_raw, want_norm = public(x), public(_normalized(x))
        got_raw, got_norm = raw.model(x), norm.model(x)
    torch.testing.assert_close(got_raw, want_raw, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_norm, want_norm, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got_raw, got_norm, atol=1e-3)  # the two conventions differ
    y = got_raw.argmax(dim=1)  # (4,) every example clean-correct, so the attack has work to do
    result = get_attack("pgd", steps=3)(raw.model, x, y, epsilons=[0.0, 8 / 255])
    assert result.adversarials.shape == (2, *x.shape)
    assert not bool(result.success[0].any())  # eps 0: robust accuracy = clean accuracy (1.0)
    delta = (result.adversarials[1] - x).abs().amax()
    assert float(delta) <= 8 / 255 + 1e-6


@pytest.mark.parametrize("final_bn", [True, False])
def test_public_preact_resnet18_state_dict_loads(tmp_path: Path, final_bn: bool) -> None:
    torch.manual_seed(2)
    public = _randomize(PreActResNet(final_bn), seed=2)
    x = _images(2)
    model = create_model("preact_resnet18", num_classes=10, final_bn=final_bn)
    load_state_dict_into(model, public.state_dict())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), public(x), rtol=1e-4, atol=1e-5)


def test_kuangliu_preact_needs_final_bn_false() -> None:
    public = PreActResNet(final_bn=False)
    model = create_model("preact_resnet18", num_classes=10)
    with pytest.raises(UserError, match=r"lacks tensor 'net\.bn\.weight'"):
        load_state_dict_into(model, public.state_dict())


@pytest.mark.parametrize(
    ("arch", "kwargs", "num_classes", "match"),
    [
        (
            "resnet18_cifar",
            {},
            100,
            r"'net\.linear\.weight' has shape \(10, 512\) but .* \(100, 512\)",
        ),
        ("resnet18_cifar", {"width": 0.5}, 10, r"'net\.conv1\.weight' has shape \(64, 3, 3, 3\)"),
        ("preact_resnet18", {}, 10, r"'net\.layer2\.0\.bn1\.weight' has shape \(128,\) .* \(64,\)"),
    ],
)
def test_mismatch_names_the_first_bad_key(
    arch: str, kwargs: dict[str, float], num_classes: int, match: str
) -> None:
    public = ResNet(BasicBlock, [2, 2, 2, 2])
    model = create_model(arch, num_classes=num_classes, **kwargs)
    with pytest.raises(UserError, match=match):
        load_state_dict_into(model, public.state_dict())


@pytest.mark.parametrize("arch", ["resnet18_cifar", "preact_resnet18"])
@pytest.mark.parametrize("size", [32, 40])
def test_shapes_and_tiny_width(arch: str, size: int) -> None:
    model = create_model(arch, num_classes=7, width=0.125).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    assert out.shape == (2, 7)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].out_channels == 8
