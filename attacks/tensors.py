"""Small tensor helpers shared by the attacks: per-row broadcasting and local random generators."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["expand_like", "generator", "generator_or_global", "per_row"]


def per_row(v: Tensor, like: Tensor) -> Tensor:
    """``v`` (m,) reshaped to ``(m, 1, ..., 1)`` so it scales each row of ``like`` (m, ...)."""
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def expand_like(mask: Tensor, like: Tensor) -> Tensor:
    """A mask ``(..., n)`` reshaped to broadcast against ``like`` ``(..., n, C, H, W)``."""
    extra = like.ndim - mask.ndim
    return mask.reshape(tuple(mask.shape) + (1,) * extra)


def generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A local generator seeded with ``seed``; ``None`` seeds it non-deterministically.

    Either way torch's global RNG is not touched (native APGD draws its starts from it).
    """
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()  # non-deterministic, without touching the global RNG
    else:
        gen.manual_seed(seed)
    return gen


def generator_or_global(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A local generator seeded with ``seed``; ``None`` draws from torch's global RNG.

    Used by FAB and Square: ``generator=None`` in ``torch.rand`` & co. means the global RNG,
    which the :class:`~attacks.base.Attack` template seeds (or leaves alone for ``seed=None``).
    """
    return None if seed is None else torch.Generator(device=device).manual_seed(seed)
