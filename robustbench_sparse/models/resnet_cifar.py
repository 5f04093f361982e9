"""CIFAR ResNets of He et al. (2016, section 4.2): ``resnet20``, ``resnet32``, ``resnet56``.

Depth ``6n + 2``: a 3x3 stem conv with 16 channels, three stages of ``n`` basic blocks with 16/32/64
channels (stride 2 at the start of stages 2 and 3), global average pooling and a linear classifier.

Shortcuts use **option B**: a 1x1 convolution (stride 2) + BatchNorm where the shape changes, identity
elsewhere. (The paper's CIFAR models use option A, zero-padding identity; option B adds ~0.3 % parameters
but gives Campfire ordinary 1x1 convolutions instead of a parameter-free padding trick.)
Module names follow torchvision: ``conv1``, ``bn1``, ``layer1..3``, ``fc``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from robustbench_sparse.models.registry import register_model

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "resnet32", "resnet56"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (1x1 conv shortcut when the shape changes)."""

    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        """``(N, c_in, H, W)`` -> ``(N, c_out, H/stride, W/stride)``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)  # type: ignore[no-any-return]


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs (works for any size >= 8).

    Args:
        n: blocks per stage.
        num_classes: logits.
        in_channels: image channels.
        width: channels of the first stage (16 in the paper); stages use width, 2*width, 4*width.
    """

    def __init__(self, n: int, num_classes: int, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(width, width, n, stride=1)
        self.layer2 = self._stage(width, 2 * width, n, stride=2)
        self.layer3 = self._stage(2 * width, 4 * width, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _stage(c_in: int, c_out: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(c_in, c_out, stride)]
        blocks += [BasicBlock(c_out, c_out, 1) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, num_classes)``."""
        x = self.relu(self.bn1(self.conv1(x)))  # (N, w, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (N, 4w, H/4, W/4)
        x = self.avgpool(x).flatten(1)  # (N, 4w)
        return self.fc(x)  # type: ignore[no-any-return]


@register_model("resnet20")
def resnet20(*, num_classes: int, in_channels: int = 3, **kwargs: Any) -> CifarResNet:
    """ResNet-20 (n=3, ~0.27M parameters), option-B shortcuts."""
    return CifarResNet(3, num_classes, in_channels, **kwargs)


@register_model("resnet32")
def resnet32(*, num_classes: int, in_channels: int = 3, **kwargs: Any) -> CifarResNet:
    """ResNet-32 (n=5, ~0.47M parameters), option-B shortcuts."""
    return CifarResNet(5, num_classes, in_channels, **kwargs)


@register_model("resnet56")
def resnet56(*, num_classes: int, in_channels: int = 3, **kwargs: Any) -> CifarResNet:
    """ResNet-56 (n=9, ~0.86M parameters), option-B shortcuts."""
    return CifarResNet(9, num_classes, in_channels, **kwargs)
