"""ToST's "ghost" model transforms: smooth activations and 1x1 skip paths, removed exactly.

Jaiswal, Ma, Chen, Ding, Wang, "Training Your Sparse Neural Network Better with Any Mask",
ICML 2022 (arXiv 2206.12755); reference code VITA-Group/ToST@2b5bac2
(``soft_activation/``, ``skip_connection/models/resnet_modified.py``).

- :class:`GhostActivation` replaces an ``nn.ReLU`` module: ``(1 - b) relu(x) + b smooth(x)``
  with the blend ``b`` in ``[0, 1]`` (swish = SiLU, softplus or GELU). At ``b == 0`` it returns
  ``relu(x)`` exactly; :meth:`Ghosts.remove` puts the original ``nn.ReLU`` instance back.
- :class:`GhostSkip` is a 1x1 convolution parallel to a pruned ``Conv2d`` (same input, output
  channels and stride), added to that convolution's output (before its BatchNorm) times a
  ``scale``: ``conv(x) + scale * ghost(x)``. Its weight is initialised to ``1e-4`` as in
  ToST's ``conv_jump`` paths. It is a plain ``nn.Module`` holding a 4-D parameter, *not* an
  ``nn.Conv2d``: layer selection and sparsity reports only see ``Conv2d``/``Linear`` modules,
  so ghosts are in no mask and no sparsity denominator. At ``scale == 0`` the convolution's
  output is returned untouched, so removing the path then leaves the logits bit for bit.

The ghosts are registered as submodules of the model (``<conv>.tost_ghost``) so the optimizer,
``.to(device)`` and resumable training state see them; a checkpoint written while they exist
carries their tensors and therefore does not load as the plain architecture (never silently a
different function).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.hooks import RemovableHandle

__all__ = ["GHOST_NAME", "GhostActivation", "GhostSkip", "Ghosts", "install_ghosts"]

logger = logging.getLogger(__name__)

GHOST_NAME = "tost_ghost"  # the attribute a ghost skip path is registered under on its conv
GHOST_INIT = 1e-4  # ToST's conv_jump weights start at 1e-4

_SMOOTH: dict[str, Callable[[Tensor], Tensor]] = {
    "swish": F.silu,
    "softplus": F.softplus,
    "gelu": F.gelu,
}


class GhostActivation(nn.Module):
    """``(1 - blend) * relu(x) + blend * smooth(x)``, elementwise (any shape); ``relu`` at 0."""

    def __init__(self, smooth: str, original: nn.Module) -> None:
        super().__init__()
        if smooth not in _SMOOTH:
            raise ValueError(f"unknown ghost activation {smooth!r}; valid: {sorted(_SMOOTH)}")
        self.smooth = smooth
        self.blend = 1.0
        # Kept outside the module tree (no duplicate registration, nothing in the state dict).
        object.__setattr__(self, "_original", original)

    @property
    def original(self) -> nn.Module:
        """The ``nn.ReLU`` module this ghost stands in for."""
        original: nn.Module = self.__dict__["_original"]
        return original

    def forward(self, x: Tensor) -> Tensor:
        """Same shape as ``x``."""
        out = F.relu(x)
        if self.blend == 0.0:
            return out
        return (1.0 - self.blend) * out + self.blend * _SMOOTH[self.smooth](x)

    def extra_repr(self) -> str:
        return f"smooth={self.smooth}, blend={self.blend:.4f}"


class GhostSkip(nn.Module):
    """A ghost 1x1 path parallel to ``conv``: ``(N, C_in, H, W) -> (N, C_out, H', W')``."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        out_ch, in_ch = conv.out_channels, conv.in_channels
        w = conv.weight
        self.weight = nn.Parameter(
            torch.full((out_ch, in_ch, 1, 1), GHOST_INIT, dtype=w.dtype, device=w.device)
        )
        self.stride = tuple(conv.stride)
        self.scale = 1.0

    def forward(self, x: Tensor) -> Tensor:
        """The path's output: ``(N, C_out, H', W')`` at the conv's stride."""
        return F.conv2d(x, self.weight, stride=self.stride)

    def add_to(self, module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Tensor:
        """Forward hook of the parallel conv: its output plus ``scale`` times this path's."""
        if self.scale == 0.0:
            return output
        return output + self.scale * self(inputs[0])

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        # A training state saved after the ghosts were removed has no ghost tensors; the
        # sparsifier's state (loaded next) removes these paths again. Absent = not missing.
        if prefix + "weight" in state_dict:
            super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, stride={self.stride}, scale={self.scale:.4f}"


def _skip_fits(conv: nn.Conv2d) -> bool:
    """True when a stride-matched 1x1 path gives the conv's output size ("same" padding)."""
    if conv.groups != 1:
        return False
    if isinstance(conv.padding, str):
        return conv.padding == "same"
    return all(
        2 * int(p) == int(d) * (int(k) - 1)
        for p, d, k in zip(conv.padding, conv.dilation, conv.kernel_size, strict=True)
    )


@dataclass
class Ghosts:
    """The ghosts installed on one model; :meth:`set_strength` anneals, :meth:`remove` ends them."""

    activations: list[tuple[nn.Module, str, GhostActivation]] = field(default_factory=list)
    skips: list[tuple[nn.Conv2d, GhostSkip, RemovableHandle]] = field(default_factory=list)
    removed: bool = False

    def set_strength(self, strength: float) -> None:
        """Set every activation's blend and every skip path's scale to ``strength`` in [0, 1]."""
        for _, _, act in self.activations:
            act.blend = strength
        for _, skip, _ in self.skips:
            skip.scale = strength

    def parameters(self) -> list[nn.Parameter]:
        """The ghost parameters (the skip paths' weights), while installed."""
        return [skip.weight for _, skip, _ in self.skips]

    def remove(self) -> None:
        """Put every original ``nn.ReLU`` back and delete every skip path (idempotent)."""
        if self.removed:
            return
        for parent, attr, act in self.activations:
            parent._modules[attr] = act.original
        for conv, _, handle in self.skips:
            handle.remove()
            delattr(conv, GHOST_NAME)
        logger.info(
            "ToST ghosts removed: %d activations back to ReLU, %d skip paths deleted",
            len(self.activations),
            len(self.skips),
        )
        self.activations.clear()
        self.skips.clear()
        self.removed = True


def install_ghosts(
    model: nn.Module, conv_names: list[str], *, activation: str, skip: bool
) -> Ghosts:
    """Install ToST's ghosts on ``model`` at full strength (blend 1, scale 1).

    ``activation`` (``swish``/``softplus``/``gelu``; ``relu`` = none) replaces every ``nn.ReLU``
    module; with ``skip`` every ``Conv2d`` among ``conv_names`` (module names, e.g. the pruned
    layers) whose padding keeps the spatial size ("same" padding, any stride) and with
    ``groups == 1`` gets a :class:`GhostSkip` path (others are logged and skipped).
    """
    ghosts = Ghosts()
    if activation != "relu":
        for parent_name, parent in list(model.named_modules()):
            for attr, child in list(parent._modules.items()):
                if type(child) is nn.ReLU:
                    ghost = GhostActivation(activation, child)
                    parent._modules[attr] = ghost
                    ghosts.activations.append((parent, attr, ghost))
                    logger.debug("ghost %s at %s.%s", activation, parent_name, attr)
        if not ghosts.activations:
            logger.warning(
                "no nn.ReLU module to smooth (the model calls F.relu): no ghost activations"
            )
    if skip:
        modules = dict(model.named_modules())
        for name in conv_names:
            conv = modules.get(name)
            if not isinstance(conv, nn.Conv2d):
                continue
            if not _skip_fits(conv):
                logger.info("no ghost skip path at %s (padding does not keep the size)", name)
                continue
            path = GhostSkip(conv)
            conv.add_module(GHOST_NAME, path)
            ghosts.skips.append((conv, path, conv.register_forward_hook(path.add_to)))
    return ghosts
