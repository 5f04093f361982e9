"""``small_cnn``: a few 3x3 convolutions with BatchNorm, sized for 8x8 (digits) and 28x28 (MNIST) inputs."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from robustbench_sparse.models.registry import register_model

__all__ = ["SmallCNN", "small_cnn"]


def _conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Small CNN with 3x3 convs, one 1x1 conv and a linear classifier (``width=1`` shown)::

        conv1  3x3  in -> 32   BN ReLU      (H x W)
        [maxpool 2x2 if H >= pool_min_size]  (28 -> 14; 8x8 inputs are not pooled)
        conv2  3x3  32 -> 64   BN ReLU
        conv3  3x3  64 -> 64   BN ReLU, stride 2   (8 -> 4, 14 -> 7)
        conv4  3x3  64 -> 128  BN ReLU
        conv5  1x1 128 -> 128  BN ReLU      (gives Campfire a 1x1 layer to prune per filter)
        global average pool, fc Linear(128, num_classes)

    About 148k parameters at ``width=1`` (10 classes, 1 input channel). The pooling decision is taken on
    the input size in ``forward`` so the same model serves 8x8 and 28x28 inputs.

    Args:
        num_classes: logits.
        in_channels: image channels.
        width: channel multiplier (channels are rounded, at least 1).
        pool_min_size: max-pool after ``conv1`` when the input height is at least this.
    """

    def __init__(
        self, num_classes: int, in_channels: int = 1, width: float = 1.0, pool_min_size: int = 16
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")

        def ch(c: int) -> int:
            return max(1, round(c * width))

        self.pool_min_size = pool_min_size
        self.conv1 = _conv_bn(in_channels, ch(32))
        self.pool = nn.MaxPool2d(2)
        self.conv2 = _conv_bn(ch(32), ch(64))
        self.conv3 = _conv_bn(ch(64), ch(64), stride=2)
        self.conv4 = _conv_bn(ch(64), ch(128))
        self.conv5 = _conv_bn(ch(128), ch(128), kernel=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch(128), num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, num_classes)``."""
        x = self.conv1(x)
        if x.shape[-2] >= self.pool_min_size:
            x = self.pool(x)  # (N, 32w, H/2, W/2)
        x = self.conv5(self.conv4(self.conv3(self.conv2(x))))  # (N, 128w, H', W')
        x = self.avgpool(x).flatten(1)  # (N, 128w)
        return self.fc(x)  # type: ignore[no-any-return]


@register_model("small_cnn")
def small_cnn(*, num_classes: int, in_channels: int = 3, **kwargs: Any) -> SmallCNN:
    """:class:`SmallCNN`; kwargs ``width`` (default 1.0) and ``pool_min_size`` (default 16)."""
    return SmallCNN(num_classes, in_channels, **kwargs)
