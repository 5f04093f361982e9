"""Input normalization inside the model, so that attacks and datasets work in ``[0, 1]`` pixel space."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Normalize", "NormalizedModel"]


class Normalize(nn.Module):
    """``forward(x) = (x - mean) / std`` per channel, with ``mean``/``std`` as (saved) buffers.

    Args:
        mean: per-channel mean, length ``C``.
        std: per-channel standard deviation, length ``C``, all positive.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or len(mean) == 0:
            raise ValueError(
                f"mean and std need the same, non-zero length; got {len(mean)} and {len(std)}"
            )
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).reshape(1, -1, 1, 1)
        )
        self.register_buffer(
            "std", torch.tensor(list(std), dtype=torch.float32).reshape(1, -1, 1, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Normalize a batch ``(N, C, H, W)``."""
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return (
            f"mean={tuple(self.mean.flatten().tolist())}, std={tuple(self.std.flatten().tolist())}"
        )


class NormalizedModel(nn.Module):
    """``net(normalize(x))``: a network that takes ``[0, 1]`` images.

    Attributes:
        normalize: the :class:`Normalize` layer.
        net: the wrapped network; parameter names therefore look like ``net.conv1.weight``.
        arch: registry name the model was built from (``None`` if built by hand).
        num_classes: number of output logits (``None`` if unknown).
        arch_kwargs: extra keyword arguments the builder received (for rebuilding from a checkpoint).
    """

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        arch: str | None = None,
        num_classes: int | None = None,
        arch_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net
        self.arch = arch
        self.num_classes = num_classes
        self.arch_kwargs: dict[str, Any] = dict(arch_kwargs or {})

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` for ``x`` ``(N, C, H, W)`` in ``[0, 1]``."""
        return self.net(self.normalize(x))  # type: ignore[no-any-return]
