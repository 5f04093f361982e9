"""Context managers that keep an attack from changing the model it attacks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["frozen_eval", "seeded"]


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module of ``model`` in eval mode and every parameter at ``requires_grad=False``.

    Eval mode keeps BatchNorm running statistics untouched (and Dropout off); frozen parameters
    mean that library code calling ``loss.backward()`` (foolbox/eagerpy, torchattacks' CW) fills
    no parameter ``.grad``. The training flag of every submodule and the ``requires_grad`` flag of
    every parameter are restored on exit, also when the body raises.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad in flags:
            p.requires_grad_(requires_grad)


@contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNGs for the body and restore the previous RNG state afterwards.

    Library attacks (torchattacks, foolbox) draw random starts from the global RNG, so forking it
    is the only way to make them reproducible. ``seed=None`` leaves the RNG alone.
    """
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
