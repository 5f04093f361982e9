"""Interval bound propagation (IBP) over the registry's networks (Gowal et al. 2018).

"On the Effectiveness of Interval Bound Propagation for Training Verifiably Robust Models"
(Gowal, Dvijotham, Stanforth et al., 2018; reference code deepmind/interval-bound-propagation).
A box ``[lo, hi]`` of inputs is pushed through the network layer by layer; every output of every
input in the box lies in the returned box (soundness up to float rounding, ~1e-6 relative).

Layer rules (``c = (lo + hi) / 2``, ``r = (hi - lo) / 2``):

- ``Conv2d`` / ``Linear``: ``c' = W c + b``, ``r' = |W| r`` (no bias in the radius; the conv's own
  stride, padding, dilation, groups and padding mode).
- ``BatchNorm1d/2d``: the per-channel affine map ``w = gamma / sqrt(var + eps)``,
  ``b = beta - w * mean`` with ``|w|`` on the radius. Eval mode uses the running statistics; IBP
  training passes the batch statistics of the nominal forward pass (:func:`batch_statistics`), as
  the reference code does. Train-mode BatchNorm is never run on the bounds themselves.
- ``ReLU``, max / average / adaptive pooling, residual add: monotone increasing, so the operation is
  applied to ``lo`` and to ``hi``. ``Flatten`` reshapes both.
- :class:`~robustbench_sparse.models.normalize.Normalize`: ``(x - mean) / std`` with ``std > 0``
  on both ends; the input box is clipped to ``[0, 1]`` in pixel space first (:func:`input_box`).

Networks with control flow (the residual blocks and ``forward`` methods of the registry's models)
are walked by explicit per-class programs that mirror their ``forward``; types are matched
exactly, so a subclass with its own ``forward`` is refused rather than guessed. An unknown layer
type raises :class:`~robustbench_sparse.errors.UserError` naming it.

**Elision of the last layer** (Gowal et al. 2018, section 3; CROWN-IBP's ``BoundLinear``):
:func:`margin_lower_bounds` bounds the margins ``z_y - z_j`` by multiplying the class-difference
matrix ``C`` (rows ``e_y - e_j``) into the final ``Linear`` layer, ``W' = C W``, ``b' = C b``,
and propagating the penultimate box through ``W'``. This is never looser than ``lo_y - hi_j``
from the logit box, which is the fallback for a network that does not end in a ``Linear``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_sparse.errors import UserError
from robustbench_sparse.models import cifar_resnets, resnet_cifar, small_cnn, vgg_wrn
from robustbench_sparse.models.normalize import Normalize, NormalizedModel

logger = logging.getLogger(__name__)

__all__ = [
    "Box",
    "batch_statistics",
    "input_box",
    "interval_bounds",
    "margin_lower_bounds",
    "supported_layer_types",
]

Box = tuple[Tensor, Tensor]
"""``(lo, hi)``: elementwise lower and upper bounds of one tensor, same shape."""

BnStats = Mapping[nn.Module, tuple[Tensor, Tensor]]
"""Per BatchNorm module: the (mean, biased variance) per channel of its nominal training input."""

Rule = Callable[["_Walker", nn.Module, Box], Box]
Headed = Callable[["_Walker", nn.Module, Box], tuple[Box, nn.Linear]]


def input_box(x: Tensor, eps: float | Tensor) -> Box:
    """The L-infinity box of radius ``eps`` around ``x`` (N, C, H, W), clipped to ``[0, 1]``.

    ``eps`` in ``[0, 1]`` pixel units: a number or a tensor broadcastable to ``x`` ((N, 1, 1, 1)).
    """
    return (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)


def _affine(box: Box, apply: Callable[[Tensor, bool], Tensor]) -> Box:
    """``apply(t, centre)`` is the layer with its weights (and bias iff ``centre``); ``apply(r,
    False)`` must use ``|W|``."""
    lo, hi = box
    c = apply((lo + hi) / 2, True)
    r = apply((hi - lo) / 2, False)
    return c - r, c + r


class _Walker:
    """Applies the layer rules; carries the BatchNorm batch statistics of IBP training."""

    def __init__(self, bn_stats: BnStats | None) -> None:
        self.bn_stats = bn_stats or {}

    def __call__(self, module: nn.Module, box: Box) -> Box:
        rule = _rules().get(type(module))
        if rule is not None:
            return rule(self, module, box)
        headed = _headed().get(type(module))
        if headed is not None:
            body, head = headed(self, module, box)
            return _linear(self, head, body)
        raise UserError(
            f"interval bound propagation does not support layer type {type(module).__name__}; "
            f"supported: {', '.join(supported_layer_types())}"
        )

    def seq(self, box: Box, *modules: nn.Module) -> Box:
        for m in modules:
            box = self(m, box)
        return box


def _linear(_: _Walker, m: nn.Module, box: Box) -> Box:
    assert isinstance(m, nn.Linear)
    return _affine(
        box,
        lambda t, ctr: F.linear(t, m.weight if ctr else m.weight.abs(), m.bias if ctr else None),
    )


def _conv(_: _Walker, m: nn.Module, box: Box) -> Box:
    assert isinstance(m, nn.Conv2d)
    return _affine(
        box,
        lambda t, ctr: m._conv_forward(
            t, m.weight if ctr else m.weight.abs(), m.bias if ctr else None
        ),
    )


def _batch_norm(w: _Walker, m: nn.Module, box: Box) -> Box:
    assert isinstance(m, nn.modules.batchnorm._BatchNorm)
    if m in w.bn_stats:
        mean, var = w.bn_stats[m]
    elif m.training or m.running_mean is None or m.running_var is None:
        raise UserError(
            f"{type(m).__name__} without running statistics or in training mode cannot be bounded "
            "by IBP; put the model in eval mode (a model with track_running_stats=False is refused)"
        )
    else:
        mean, var = m.running_mean, m.running_var
    scale = torch.rsqrt(var + m.eps)  # (C,)
    if m.weight is not None:
        scale = scale * m.weight
    shift = -mean * scale + (m.bias if m.bias is not None else 0.0)
    shape = (1, -1) + (1,) * (box[0].dim() - 2)  # channels on dim 1

    def apply(t: Tensor, ctr: bool) -> Tensor:
        return (
            t * scale.reshape(shape) + shift.reshape(shape)
            if ctr
            else t * scale.abs().reshape(shape)
        )

    return _affine(box, apply)


def _monotone(_: _Walker, m: nn.Module, box: Box) -> Box:
    return m(box[0]), m(box[1])


def _relu(_: _Walker, m: nn.Module, box: Box) -> Box:
    return F.relu(box[0]), F.relu(box[1])  # never in place: both ends are needed


def _normalize(_: _Walker, m: nn.Module, box: Box) -> Box:
    assert isinstance(m, Normalize)
    return (box[0] - m.mean) / m.std, (box[1] - m.mean) / m.std  # std > 0: increasing


def _sequential(w: _Walker, m: nn.Module, box: Box) -> Box:
    return w.seq(box, *m.children())


def _add(a: Box, b: Box) -> Box:
    return a[0] + b[0], a[1] + b[1]


def _pool_flat(box: Box) -> Box:
    """``adaptive_avg_pool2d(., 1).flatten(1)``: (N, C, H, W) -> (N, C)."""
    return F.adaptive_avg_pool2d(box[0], 1).flatten(1), F.adaptive_avg_pool2d(box[1], 1).flatten(1)


def _relu_box(box: Box) -> Box:
    return F.relu(box[0]), F.relu(box[1])


# --- residual blocks: each mirrors its class's forward ------------------------------------------


def _basic_block(w: _Walker, m: Any, x: Box) -> Box:
    """resnet_cifar.BasicBlock and torchvision's BasicBlock (``downsample`` shortcut)."""
    identity = x if m.downsample is None else w(m.downsample, x)
    out = w.seq(x, m.conv1, m.bn1, m.relu, m.conv2, m.bn2)
    return _relu_box(_add(out, identity))


def _bottleneck(w: _Walker, m: Any, x: Box) -> Box:
    """torchvision's Bottleneck."""
    identity = x if m.downsample is None else w(m.downsample, x)
    out = w.seq(x, m.conv1, m.bn1, m.relu, m.conv2, m.bn2, m.relu, m.conv3, m.bn3)
    return _relu_box(_add(out, identity))


def _residual_block(w: _Walker, m: Any, x: Box) -> Box:
    """cifar_resnets.ResidualBlock (kuangliu): an empty ``shortcut`` Sequential is the identity."""
    out = _relu_box(w.seq(x, m.conv1, m.bn1))
    out = w.seq(out, m.conv2, m.bn2)
    return _relu_box(_add(out, w(m.shortcut, x)))


def _preact_block(w: _Walker, m: Any, x: Box) -> Box:
    """cifar_resnets.PreActBlock: the shortcut takes the pre-activated input."""
    out = _relu_box(w(m.bn1, x))
    shortcut = w(m.shortcut, out) if m.shortcut is not None else x
    out = w(m.conv1, out)
    out = w(m.conv2, _relu_box(w(m.bn2, out)))
    return _add(out, shortcut)


def _wide_block(w: _Walker, m: Any, x: Box) -> Box:
    """vgg_wrn.WideBasicBlock (RobustBench's WRN block)."""
    act = w.seq(x, m.bn1, m.relu1)
    out = w.seq(act, m.conv1, m.bn2, m.relu2, m.conv2)
    shortcut = x if m.convShortcut is None else w(m.convShortcut, act)
    return _add(shortcut, out)


# --- whole networks: (penultimate box, classifier) for the elision --------------------------------


def _small_cnn(w: _Walker, m: Any, x: Box) -> tuple[Box, nn.Linear]:
    out = w(m.conv1, x)
    if out[0].shape[-2] >= m.pool_min_size:
        out = w(m.pool, out)
    out = w.seq(out, m.conv2, m.conv3, m.conv4, m.conv5, m.avgpool)
    return (out[0].flatten(1), out[1].flatten(1)), m.fc


def _cifar_resnet(w: _Walker, m: Any, x: Box) -> tuple[Box, nn.Linear]:
    out = w.seq(x, m.conv1, m.bn1, m.relu, m.layer1, m.layer2, m.layer3, m.avgpool)
    return (out[0].flatten(1), out[1].flatten(1)), m.fc


def _resnet18_cifar(w: _Walker, m: Any, x: Box) -> tuple[Box, nn.Linear]:
    out = _relu_box(w.seq(x, m.conv1, m.bn1))
    return _pool_flat(w.seq(out, m.layer1, m.layer2, m.layer3, m.layer4)), m.linear


def _preact_resnet18(w: _Walker, m: Any, x: Box) -> tuple[Box, nn.Linear]:
    out = w.seq(x, m.conv1, m.layer1, m.layer2, m.layer3, m.layer4)
    if m.bn is not None:
        out = _relu_box(w(m.bn, out))
    return _pool_flat(out), m.linear


def _vgg(w: _Walker, m: Any, x: Box) -> tuple[Box, nn.Linear]:
    return _pool_flat(w(m.features, x)), m.classifier


def _wide_resnet(w: _Walker, m: Any, x: Box) -> tuple[Box, nn.Linear]:
    out = w.seq(x, m.conv1, m.block1.layer, m.block2.layer, m.block3.layer, m.bn1, m.relu)
    return _pool_flat(out), m.fc


def _tv_resnet(w: _Walker, m: Any, x: Box) -> tuple[Box, nn.Linear]:
    out = w.seq(x, m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4)
    out = w(m.avgpool, out)
    return (out[0].flatten(1), out[1].flatten(1)), m.fc


def _headed_sequential(w: _Walker, m: nn.Module, x: Box) -> tuple[Box, nn.Linear]:
    layers = list(m.children())
    return w.seq(x, *layers[:-1]), layers[-1]  # type: ignore[return-value]


def _headed_normalized(w: _Walker, m: nn.Module, x: Box) -> tuple[Box, nn.Linear]:
    assert isinstance(m, NormalizedModel)
    x = w(m.normalize, x)
    headed = _head_of(m.net)
    if headed is None:  # no final Linear: cannot elide; the caller falls back
        raise _NoHead
    return headed(w, m.net, x)


class _NoHead(Exception):
    """The network does not end in a ``Linear`` layer the margins can be elided into."""


def _head_of(module: nn.Module) -> Headed | None:
    if type(module) is nn.Sequential:
        children = list(module.children())
        return _headed_sequential if children and type(children[-1]) is nn.Linear else None
    return _headed().get(type(module))


@functools.cache
def _rules() -> dict[type[nn.Module], Rule]:
    rules: dict[type[nn.Module], Rule] = {
        nn.Linear: _linear,
        nn.Conv2d: _conv,
        nn.BatchNorm1d: _batch_norm,
        nn.BatchNorm2d: _batch_norm,
        nn.ReLU: _relu,
        nn.MaxPool2d: _monotone,
        nn.AvgPool2d: _monotone,
        nn.AdaptiveAvgPool2d: _monotone,
        nn.AdaptiveMaxPool2d: _monotone,
        nn.Flatten: _monotone,
        nn.Identity: _monotone,
        nn.Sequential: _sequential,
        Normalize: _normalize,
        resnet_cifar.BasicBlock: _basic_block,
        cifar_resnets.ResidualBlock: _residual_block,
        cifar_resnets.PreActBlock: _preact_block,
        vgg_wrn.WideBasicBlock: _wide_block,
    }
    try:
        from torchvision.models import resnet as tv_resnet
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return rules
    rules[tv_resnet.BasicBlock] = _basic_block
    rules[tv_resnet.Bottleneck] = _bottleneck
    return rules


@functools.cache
def _headed() -> dict[type[nn.Module], Headed]:
    headed: dict[type[nn.Module], Headed] = {
        NormalizedModel: _headed_normalized,
        small_cnn.SmallCNN: _small_cnn,
        resnet_cifar.CifarResNet: _cifar_resnet,
        cifar_resnets.CifarResNet18: _resnet18_cifar,
        cifar_resnets.PreActResNet18: _preact_resnet18,
        vgg_wrn.VGG16BN: _vgg,
        vgg_wrn.WideResNet: _wide_resnet,
    }
    try:
        from torchvision.models import resnet as tv_resnet
    except ImportError:  # pragma: no cover
        return headed
    headed[tv_resnet.ResNet] = _tv_resnet
    return headed


def supported_layer_types() -> list[str]:
    """Names of the module types IBP walks (layers, blocks and whole registry networks), sorted."""
    return sorted({t.__name__ for t in (*_rules(), *_headed())})


def interval_bounds(model: nn.Module, box: Box, *, bn_stats: BnStats | None = None) -> Box:
    """Bounds ``(lo, hi)`` (N, classes) of ``model``'s logits over the input box ``box``.

    Args:
        model: a registry network (usually a
            :class:`~robustbench_sparse.models.normalize.NormalizedModel`) or a Sequential of
            supported layers; BatchNorm in eval mode unless ``bn_stats`` covers it.
        box: ``(lo, hi)`` inputs (N, C, H, W) in ``[0, 1]`` pixel scale (:func:`input_box`).
        bn_stats: batch statistics per BatchNorm module (:func:`batch_statistics`, IBP training).

    Raises:
        UserError: a layer type IBP does not support (named), or train-mode BatchNorm without
            statistics.
    """
    if type(model) is NormalizedModel and _head_of(model.net) is None:
        return _Walker(bn_stats).seq(box, model.normalize, model.net)
    return _Walker(bn_stats)(model, box)


def margin_lower_bounds(
    model: nn.Module, box: Box, y: Tensor, *, bn_stats: BnStats | None = None
) -> Tensor:
    """Lower bounds (N, classes) of the margins ``logit_y - logit_j`` over the box, column ``y`` 0.

    Computed with the elision of the last layer (module docstring) when the network ends in a
    ``Linear`` layer, otherwise as ``lo_y - hi_j`` from :func:`interval_bounds`. An example is
    verified at the box when every column but ``y`` is ``> 0``. ``y``: (N,) int64 labels.
    """
    walker = _Walker(bn_stats)
    headed = _head_of(model)
    try:
        if headed is None:
            raise _NoHead
        (lo, hi), head = headed(walker, model, box)
        if lo.dim() != 2:
            raise _NoHead
    except _NoHead:
        logger.debug("no final Linear layer: margins bounded from the logit box (no elision)")
        z_lo, z_hi = interval_bounds(model, box, bn_stats=bn_stats)
        margins = z_lo.gather(1, y[:, None]) - z_hi  # (N, classes)
        return margins.scatter(1, y[:, None], 0.0)
    weight, bias = head.weight, head.bias  # (K, d), (K,)
    w_diff = weight[y].unsqueeze(1) - weight.unsqueeze(0)  # (N, K, d): rows e_y - e_j times W
    c, r = ((lo + hi) / 2).unsqueeze(-1), ((hi - lo) / 2).unsqueeze(-1)  # (N, d, 1)
    bound = (w_diff @ c - w_diff.abs() @ r).squeeze(-1)  # (N, K)
    if bias is not None:
        bound = bound + (bias[y].unsqueeze(1) - bias.unsqueeze(0))
    return bound.scatter(1, y[:, None], 0.0)  # the y-vs-y row is exactly 0, not a bound


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[dict[nn.Module, tuple[Tensor, Tensor]]]:
    """Record the batch (mean, biased variance) each train-mode BatchNorm normalises with.

    Inside the block, a nominal ``model(x)`` fills the yielded dict; pass it as ``bn_stats`` so
    the bounds use the same statistics (Gowal et al.'s reference code). Gradients flow through.
    """
    stats: dict[nn.Module, tuple[Tensor, Tensor]] = {}

    def hook(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        if not module.training:
            return
        t = inputs[0]
        dims = [d for d in range(t.dim()) if d != 1]
        stats[module] = (t.mean(dims), t.var(dims, unbiased=False))

    handles = [
        m.register_forward_pre_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        yield stats
    finally:
        for h in handles:
            h.remove()
