"""The CIFAR ResNet-18 and PreAct ResNet-18 of the robustness and pruning literature, with public key names.

``resnet18_cifar``
    He et al. (2016) ResNet-18 adapted to 32x32 inputs as in the widely copied definition of
    kuangliu/pytorch-cifar (``models/resnet.py``), used by HYDRA and the Adversarial Pruning benchmark:
    a 3x3 stride-1 stem (no max-pool), four stages of two basic blocks (64/128/256/512 channels),
    1x1 conv + BN ``shortcut``, global average pooling and a ``linear`` head.
``preact_resnet18``
    He et al. (2016b) pre-activation ResNet-18 as in RobustBench's model zoo and locuslab/fast_adversarial
    (Wong et al. 2020): pre-activation blocks, a 1x1 conv ``shortcut`` without BN, and a final ``bn``
    + ReLU before pooling. kuangliu's variant has no final ``bn``: ``final_bn=False`` loads it.

Module and parameter names are those definitions' own, so a plain ``state_dict()`` saved from them
loads with ``--arch`` and no renaming (:func:`~robustbench_sparse.models.registry.load_state_dict_into`
places the keys under the ``Normalize`` wrapper). Average pooling is adaptive (identical to the
public ``avg_pool2d(out, 4)`` at 32x32, and defined at other sizes). ``width`` scales every stage
(64 * width channels in the first); 1.0 is the published model.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_sparse.models.registry import register_model

__all__ = ["CifarResNet18", "PreActBlock", "PreActResNet18", "ResidualBlock"]

_STAGES = (64, 128, 256, 512)


def _channels(width: float) -> list[int]:
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return [max(1, round(c * width)) for c in _STAGES]


class ResidualBlock(nn.Module):
    """kuangliu's ``BasicBlock``: conv-BN-ReLU, conv-BN, plus ``shortcut`` (1x1 conv + BN if shapes differ)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_planes, H, W)`` -> ``(N, planes, H/stride, W/stride)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs (kuangliu/pytorch-cifar key names: ``conv1``, ``bn1``,
    ``layer1..4``, ``linear``).

    Args:
        num_classes: logits.
        in_channels: image channels.
        width: multiplier of the stage widths 64/128/256/512 (1.0: the published 11.2M-parameter model).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        c = _channels(width)
        self.conv1 = nn.Conv2d(in_channels, c[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c[0])
        self.layer1 = self._stage(c[0], c[0], 1)
        self.layer2 = self._stage(c[0], c[1], 2)
        self.layer3 = self._stage(c[1], c[2], 2)
        self.layer4 = self._stage(c[2], c[3], 2)
        self.linear = nn.Linear(c[3], num_classes)

    @staticmethod
    def _stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
        return nn.Sequential(ResidualBlock(c_in, c_out, stride), ResidualBlock(c_out, c_out, 1))

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, num_classes)``."""
        out = F.relu(self.bn1(self.conv1(x)))  # (N, c0, H, W)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))  # (N, c3, H/8, W/8)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (N, c3)
        return self.linear(out)  # type: ignore[no-any-return]


class PreActBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv twice; ``shortcut`` (1x1 conv, no BN) where shapes differ."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            )

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_planes, H, W)`` -> ``(N, planes, H/stride, W/stride)``."""
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """PreAct ResNet-18 (RobustBench / fast_adversarial key names: ``conv1``, ``layer1..4``, ``bn``,
    ``linear``).

    Args:
        num_classes: logits.
        in_channels: image channels.
        width: multiplier of the stage widths 64/128/256/512.
        final_bn: the BN + ReLU before pooling (RobustBench, Wong et al.); ``False`` for kuangliu's
            definition, which has none.
    """

    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, final_bn: bool = True
    ) -> None:
        super().__init__()
        c = _channels(width)
        self.conv1 = nn.Conv2d(in_channels, c[0], 3, stride=1, padding=1, bias=False)
        self.layer1 = self._stage(c[0], c[0], 1)
        self.layer2 = self._stage(c[0], c[1], 2)
        self.layer3 = self._stage(c[1], c[2], 2)
        self.layer4 = self._stage(c[2], c[3], 2)
        self.bn: nn.Module | None = nn.BatchNorm2d(c[3]) if final_bn else None
        self.linear = nn.Linear(c[3], num_classes)

    @staticmethod
    def _stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
        return nn.Sequential(PreActBlock(c_in, c_out, stride), PreActBlock(c_out, c_out, 1))

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, num_classes)``."""
        out = self.conv1(x)  # (N, c0, H, W)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))  # (N, c3, H/8, W/8)
        if self.bn is not None:
            out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (N, c3)
        return self.linear(out)  # type: ignore[no-any-return]


@register_model("resnet18_cifar")
def resnet18_cifar(*, num_classes: int, in_channels: int = 3, **kwargs: Any) -> CifarResNet18:
    """CIFAR ResNet-18 (3x3 stem, no max-pool, ``linear`` head; 11.2M parameters at width 1)."""
    return CifarResNet18(num_classes, in_channels, **kwargs)


@register_model("preact_resnet18")
def preact_resnet18(*, num_classes: int, in_channels: int = 3, **kwargs: Any) -> PreActResNet18:
    """PreAct ResNet-18 (RobustBench's definition; ``final_bn=False`` for kuangliu's)."""
    return PreActResNet18(num_classes, in_channels, **kwargs)
