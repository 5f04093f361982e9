"""VGG-16-BN for CIFAR and the WideResNets of RobustBench, with the public definitions' key names.

``vgg16_bn_cifar``
    Simonyan & Zisserman (2015) VGG-16 with BatchNorm, CIFAR version of kuangliu/pytorch-cifar
    (``models/vgg.py``; HYDRA and the Adversarial Pruning benchmark use this family): thirteen 3x3
    conv(bias)-BN-ReLU layers in ``features`` with five 2x2 max-pools, one ``classifier`` Linear.
``wrn28_10`` / ``wrn34_10``
    Zagoruyko & Komodakis (2016) WideResNet-depth-10 as in RobustBench's model zoo
    (``architectures/wide_resnet.py``; Madry/TRADES-style checkpoints): ``conv1``, ``block1..3.layer.i``
    pre-activation blocks with ``convShortcut`` where the shape changes, final ``bn1`` + ReLU, ``fc``.

A plain ``state_dict()`` of those definitions loads with ``--arch`` and no renaming. Pooling before
the head is adaptive (identical to the public code at 32x32). ``width`` (VGG) and ``widen_factor``
(WRN) exist so tests can build tiny models; the defaults are the published sizes.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_sparse.models.registry import register_model

__all__ = ["VGG16BN", "WideBasicBlock", "WideResNet"]

_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16BN(nn.Module):
    """VGG-16-BN for 32x32 inputs (keys ``features.<i>.*``, ``classifier.*``).

    Args:
        num_classes: logits.
        in_channels: image channels.
        width: multiplier of every conv's channels (1.0: the published 14.7M-parameter model).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        layers: list[nn.Module] = []
        c_in = in_channels
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            c_out = max(1, round(int(v) * width))
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
        layers.append(nn.AvgPool2d(kernel_size=1, stride=1))  # kuangliu's (identity) last layer
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, num_classes)`` (H, W >= 32)."""
        out = self.features(x)  # (N, 512w, H/32, W/32)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (N, 512w)
        return self.classifier(out)  # type: ignore[no-any-return]


class WideBasicBlock(nn.Module):
    """RobustBench's WRN ``BasicBlock``: BN-ReLU-conv twice, ``convShortcut`` (1x1) where shapes differ.

    As in the public code, when the shape changes the shortcut takes the pre-activated input.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.convShortcut: nn.Module | None = None  # the public key name
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_planes, H, W)`` -> ``(N, out_planes, H/stride, W/stride)``."""
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        out = self.conv2(out)
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out  # type: ignore[no-any-return]


class _NetworkBlock(nn.Module):
    """``n`` blocks under the key ``layer`` (RobustBench's ``NetworkBlock``)."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        blocks = [WideBasicBlock(in_planes, out_planes, stride)]
        blocks += [WideBasicBlock(out_planes, out_planes, 1) for _ in range(n - 1)]
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)  # type: ignore[no-any-return]


class WideResNet(nn.Module):
    """WRN-depth-k (RobustBench key names).

    Args:
        depth: ``6n + 4`` (28, 34, ...).
        num_classes: logits.
        in_channels: image channels.
        widen_factor: k; stages have 16k, 32k, 64k channels.
    """

    def __init__(
        self, depth: int, num_classes: int = 10, in_channels: int = 3, widen_factor: int = 10
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n + 4 >= 10, got {depth}")
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be >= 1, got {widen_factor}")
        n = (depth - 4) // 6
        c = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, c[0], 3, stride=1, padding=1, bias=False)
        self.block1 = _NetworkBlock(n, c[0], c[1], 1)
        self.block2 = _NetworkBlock(n, c[1], c[2], 2)
        self.block3 = _NetworkBlock(n, c[2], c[3], 2)
        self.bn1 = nn.BatchNorm2d(c[3])
        self.relu = nn.ReLU()
        self.fc = nn.Linear(c[3], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, num_classes)``."""
        out = self.block3(self.block2(self.block1(self.conv1(x))))  # (N, 64k, H/4, W/4)
        out = self.relu(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (N, 64k)
        return self.fc(out)  # type: ignore[no-any-return]


@register_model("vgg16_bn_cifar")
def vgg16_bn_cifar(*, num_classes: int, in_channels: int = 3, **kwargs: Any) -> VGG16BN:
    """VGG-16-BN for CIFAR (kuangliu/pytorch-cifar; 14.7M parameters at width 1)."""
    return VGG16BN(num_classes, in_channels, **kwargs)


@register_model("wrn28_10")
def wrn28_10(*, num_classes: int, in_channels: int = 3, **kwargs: Any) -> WideResNet:
    """WideResNet-28-10 (RobustBench; 36.5M parameters). ``widen_factor`` overrides k."""
    return WideResNet(28, num_classes, in_channels, **{"widen_factor": 10, **kwargs})


@register_model("wrn34_10")
def wrn34_10(*, num_classes: int, in_channels: int = 3, **kwargs: Any) -> WideResNet:
    """WideResNet-34-10 (RobustBench, TRADES; 46.2M parameters). ``widen_factor`` overrides k."""
    return WideResNet(34, num_classes, in_channels, **{"widen_factor": 10, **kwargs})
