"""One concrete forward pass, recorded channel by channel: the layers and their coupled channels.

:func:`trace_channels` runs the model once on a random example of the given shape under a
:class:`torch.overrides.TorchFunctionMode` and records, for every ``conv2d`` / ``linear`` call
whose weight is a parameter of the model, its shapes and which *channel group* each of its input
and output channels belongs to, and whether an input channel is *structurally zero* (zero for
every input, whatever the example: it comes from zero weights, zero biases and zero BatchNorm
affine parameters, not from a ReLU that happens to be off).

Channel groups: operations that act on each channel separately (BatchNorm, ReLU and other
activations with ``f(0) = 0``, pooling, dropout) and elementwise sums of two feature maps (a
ResNet's skip connection) tie channel ``c`` of their inputs and output into one group; ``cat``
along channels concatenates; ``flatten`` of ``(N, C, H, W)`` maps every feature to its channel.
Removing a channel physically means removing it from every tensor of its group at once, which is
possible only where every producer is a conv/linear filter (or a per-channel op on one) — see
:mod:`robustbench_sparse.cost.channels`. Anything the trace does not understand (an unknown op, the
model input, the model output) *pins* the groups it touches: they are never removed, so the
analysis errs on the side of keeping channels (compact MACs are an upper bound, never optimistic).

The coupling rule is that of structural pruning's dependency graphs (Fang et al., "DepGraph:
Towards Any Structural Pruning", CVPR 2023; the ``torch-pruning`` library), written here for the
operations the registry's models use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["ChannelTrace", "LayerCall", "trace_channels"]


@dataclass
class LayerCall:
    """One ``conv2d`` / ``linear`` call of the traced forward pass (per example, batch 1).

    ``weight_shape`` is ``(K, C/groups, kh, kw)`` (conv) or ``(K, F)`` (linear); ``out_hw`` the
    output's spatial size ``(Ho, Wo)`` (``(1, 1)`` for linear); ``in_groups`` / ``in_zero`` have
    one entry per input channel (per input feature for linear), ``out_groups`` one per filter.
    """

    name: str  # module name, e.g. "net.conv2.0"
    param: str  # weight parameter name, e.g. "net.conv2.0.weight"
    kind: str  # "conv" or "linear"
    weight_shape: tuple[int, ...]
    groups: int
    in_shape: tuple[int, ...]  # input per example: (C, H, W) or (F,)
    out_hw: tuple[int, int]
    in_groups: np.ndarray
    in_zero: np.ndarray
    out_groups: np.ndarray


@dataclass
class ChannelTrace:
    """The layers of one forward pass and the union-find of their channel groups."""

    layers: list[LayerCall] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    pinned: set[int] = field(default_factory=set)  # group roots that are never removed

    def new_groups(self, n: int, *, pinned: bool = False) -> np.ndarray:
        """``n`` fresh groups (int64 ids)."""
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        if pinned:
            self.pinned.update(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, g: int) -> int:
        """Root of group ``g`` (path halving)."""
        parent = self.parent
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Tie group ``a[i]`` to ``b[i]`` for every ``i`` (pinned if either was)."""
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[ry] = rx
                if ry in self.pinned:
                    self.pinned.add(rx)

    def pin(self, groups: np.ndarray) -> None:
        """Never remove these groups."""
        self.pinned.update(self.find(int(g)) for g in groups.tolist())

    def is_pinned(self, g: int) -> bool:
        """Whether group ``g``'s root is pinned."""
        return self.find(g) in self.pinned


@dataclass
class _Chan:
    """Channel axis (dim 1) of a traced tensor: a group and a structural-zero flag per channel."""

    groups: np.ndarray
    zero: np.ndarray


_PER_CHANNEL_ZERO_KEEPING: tuple[Callable[..., Any], ...] = (
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.silu,
    F.gelu,
    F.hardswish,
    F.dropout,
    F.max_pool2d,
    F.avg_pool2d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    torch.relu,
    torch.relu_,
    Tensor.relu,
    Tensor.relu_,
    Tensor.contiguous,
    Tensor.clone,
    torch.clone,
)
_SUMS = (torch.add, Tensor.add, Tensor.add_, Tensor.__add__, Tensor.__iadd__, Tensor.__radd__)


class _Recorder(TorchFunctionMode):
    def __init__(self, trace: ChannelTrace, params: dict[int, str]) -> None:
        super().__init__()
        self.trace = trace
        self.params = params
        self.chans: dict[int, _Chan] = {}
        self.keep: list[Any] = []  # keeps traced tensors alive, so their ids are never reused

    def track(self, t: Tensor, chan: _Chan) -> None:
        self.keep.append(t)
        self.chans[id(t)] = chan

    def get(self, t: Any) -> _Chan | None:
        return self.chans.get(id(t)) if isinstance(t, Tensor) else None

    def __torch_function__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tracked = [a for a in _tensors(args, kwargs) if id(a) in self.chans]
        if not tracked or not _tensors([out], {}):
            return out
        chan = self.rule(func, args, kwargs, out)
        if chan is None or not isinstance(out, Tensor) or out.ndim < 2:
            for t in tracked:  # not understood: its channels can never be removed
                self.trace.pin(self.chans[id(t)].groups)
            for t in _tensors([out], {}):
                if t.ndim >= 2:
                    self.track(t, _Chan(self.trace.new_groups(t.shape[1], pinned=True), _no(t)))
            return out
        self.track(out, chan)
        return out

    def rule(self, func: Any, args: Sequence[Any], kw: dict[str, Any], out: Any) -> _Chan | None:
        x = self.get(args[0]) if args else None
        if func in (F.conv2d, torch.conv2d) or func in (F.linear, torch._C._nn.linear):
            return self.weighted(func, args, kw, out)
        if func is F.batch_norm and x is not None:
            return _batch_norm(x, args, kw)
        if func in _PER_CHANNEL_ZERO_KEEPING and x is not None:
            return x
        if func in _SUMS or func in (torch.sub, Tensor.sub, Tensor.__sub__):
            return self.elementwise(args, kw, out, zero_if="both")
        if func in (torch.mul, Tensor.mul, Tensor.mul_, Tensor.__mul__, Tensor.__rmul__):
            return self.elementwise(args, kw, out, zero_if="either")
        if func in (torch.div, Tensor.div, Tensor.div_, Tensor.__truediv__):
            return self.elementwise(args, kw, out, zero_if="first")
        if func is torch.cat:
            return self.cat(args, kw, out)
        if func in (torch.flatten, Tensor.flatten, Tensor.view, Tensor.reshape, torch.reshape):
            return _reshape(x, args[0], out)
        if func in (torch.mean, Tensor.mean, torch.sum, Tensor.sum) and x is not None:
            dims = kw.get("dim", args[1] if len(args) > 1 else None)
            return _reduce(x, args[0], dims, out)
        return None

    def weighted(self, func: Any, args: Sequence[Any], kw: dict[str, Any], out: Tensor) -> _Chan:
        names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
        call = dict(zip(names, args, strict=False)) | kw
        x, weight, bias = call["input"], call["weight"], call.get("bias")
        conv = func in (F.conv2d, torch.conv2d)
        groups = int(call.get("groups", 1)) if conv else 1
        xin = self.get(x)
        param = self.params.get(id(weight))
        out_groups = self.trace.new_groups(out.shape[1])
        if xin is None or param is None or groups != 1 or (not conv and x.ndim != 2):
            # a computed weight, a grouped conv or a linear over a 3-D input: kept whole
            if xin is not None:
                self.trace.pin(xin.groups)
            self.trace.pin(out_groups)
            zero = _no(out)
        else:
            w = weight.detach().cpu().reshape(weight.shape[0], weight.shape[1], -1)  # (K, C, kh*kw)
            live = torch.from_numpy(~xin.zero)
            reads = (w[:, live] != 0).flatten(1).any(dim=1)  # (K,) some live input read
            b_zero = (
                (bias.detach().cpu() == 0) if isinstance(bias, Tensor) else torch.ones_like(reads)
            )
            zero = (~reads & b_zero).numpy()
        if param is not None and xin is not None:
            self.trace.layers.append(
                LayerCall(
                    name=param.rsplit(".", 1)[0] if "." in param else "",
                    param=param,
                    kind="conv" if conv else "linear",
                    weight_shape=tuple(weight.shape),
                    groups=groups,
                    in_shape=tuple(x.shape[1:]),
                    out_hw=(int(out.shape[2]), int(out.shape[3])) if conv else (1, 1),
                    in_groups=xin.groups.copy(),
                    in_zero=xin.zero.copy(),
                    out_groups=out_groups,
                )
            )
        return _Chan(out_groups, zero)

    def elementwise(
        self, args: Sequence[Any], kw: dict[str, Any], out: Tensor, zero_if: str
    ) -> _Chan | None:
        a, b = [*args, kw.get("other")][:2]
        ca, cb = self.get(a), self.get(b)
        channels = out.shape[1]
        if ca is not None and cb is not None:
            if len(ca.groups) != channels or len(cb.groups) != channels:
                return None  # broadcast along channels: not a per-channel op
            self.trace.union(ca.groups, cb.groups)
            zero = {"both": ca.zero & cb.zero, "either": ca.zero | cb.zero, "first": ca.zero}
            return _Chan(ca.groups, zero[zero_if])
        one = ca if ca is not None else cb
        if one is None or len(one.groups) != channels:
            return None
        keeps_zero = (zero_if == "either") or (zero_if == "first" and ca is not None)
        return _Chan(one.groups, one.zero if keeps_zero else np.zeros(channels, dtype=bool))

    def cat(self, args: Sequence[Any], kw: dict[str, Any], out: Tensor) -> _Chan | None:
        parts = list(args[0])
        dim = kw.get("dim", args[1] if len(args) > 1 else 0)
        chans = [self.get(t) for t in parts]
        if any(c is None for c in chans) or dim not in (1, 1 - out.ndim):
            return None
        known = [c for c in chans if c is not None]
        return _Chan(
            np.concatenate([c.groups for c in known]), np.concatenate([c.zero for c in known])
        )


def _tensors(args: Sequence[Any], kwargs: dict[str, Any]) -> list[Tensor]:
    found: list[Tensor] = []
    for a in [*args, *kwargs.values()]:
        if isinstance(a, Tensor):
            found.append(a)
        elif isinstance(a, list | tuple):
            found += [t for t in a if isinstance(t, Tensor)]
    return found


def _no(t: Tensor) -> np.ndarray:
    return np.zeros(t.shape[1], dtype=bool)


def _batch_norm(x: _Chan, args: Sequence[Any], kw: dict[str, Any]) -> _Chan:
    names = ("input", "running_mean", "running_var", "weight", "bias", "training")
    call = dict(zip(names, args, strict=False)) | kw
    n = len(x.groups)
    w, b, mean = call.get("weight"), call.get("bias"), call.get("running_mean")
    w_zero = (w.detach().cpu() == 0).numpy() if isinstance(w, Tensor) else np.zeros(n, dtype=bool)
    b_zero = (b.detach().cpu() == 0).numpy() if isinstance(b, Tensor) else np.ones(n, dtype=bool)
    m_zero = (
        (mean.detach().cpu() == 0).numpy() if isinstance(mean, Tensor) else np.zeros(n, dtype=bool)
    )
    if call.get("training"):
        m_zero = np.zeros(n, dtype=bool)  # batch statistics: BN(0) depends on the batch
    # BN(x) = (x - mean) / std * w + b is exactly 0 when w = b = 0, or x = 0, b = 0 and mean·w = 0
    zero = (w_zero & b_zero) | (x.zero & b_zero & (m_zero | w_zero))
    return _Chan(x.groups, zero)


def _reshape(x: _Chan | None, t: Tensor, out: Tensor) -> _Chan | None:
    if x is None or out.ndim < 2 or out.shape[0] != t.shape[0]:
        return None
    if out.shape[1] == t.shape[1] and math.prod(out.shape[2:]) == math.prod(t.shape[2:]):
        return x  # the channel axis is untouched
    if out.ndim == 2 and out.shape[1] == math.prod(t.shape[1:]):
        per = math.prod(t.shape[2:])  # (N, C, H, W) -> (N, C*H*W): feature f is channel f // HW
        return _Chan(np.repeat(x.groups, per), np.repeat(x.zero, per))
    return None


def _reduce(x: _Chan, t: Tensor, dims: Any, out: Tensor) -> _Chan | None:
    if dims is None:
        return None
    dims_list = [dims] if isinstance(dims, int) else list(dims)
    if any(d % t.ndim in (0, 1) for d in dims_list) or out.ndim < 2:
        return None
    return x


def trace_channels(model: nn.Module, input_shape: Sequence[int]) -> ChannelTrace:
    """Run ``model`` once on a random ``(1, *input_shape)`` example (pixel scale [0, 1]) and record
    its conv/linear calls and channel groups (see the module docstring).

    The model runs in eval mode under ``torch.no_grad`` on its own device; its mode is restored.
    """
    trace = ChannelTrace()
    params = {id(p): name for name, p in model.named_parameters()}
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((1, *input_shape), generator=gen).to(device)  # (1, C, H, W)
    recorder = _Recorder(trace, params)
    recorder.track(x, _Chan(trace.new_groups(x.shape[1], pinned=True), _no(x)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), recorder:
            out = model(x)
    finally:
        model.train(was_training)
    for t in _tensors([out], {}):
        chan = recorder.get(t)
        if chan is not None:
            trace.pin(chan.groups)
    return trace
