"""torchvision models: ``resnet18``, ``resnet50`` and ``tv:<any torchvision classification model>``.

Weights are random unless ``pretrained=True`` (torchvision ``weights="DEFAULT"``, which downloads them:
for real use only, never in tests). With pretrained weights and ``num_classes`` other than the weights'
class count, the last ``Linear`` is replaced by a freshly initialized one. With ``in_channels != 3`` the
first ``Conv2d`` is replaced; pretrained RGB filters are then summed (1 channel) or tiled and rescaled.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from robustbench_sparse.errors import unknown_name
from robustbench_sparse.models.registry import (
    TV_PREFIX,
    ModelBuilder,
    register_model,
    register_namespace,
)

logger = logging.getLogger(__name__)

__all__ = [
    "build_tv",
    "replace_first_conv",
    "resnet18",
    "resnet50",
    "tv_builder",
    "tv_classification_models",
]


def tv_classification_models() -> list[str]:
    """Names of torchvision's classification models (``torchvision.models.list_models``)."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def replace_first_conv(net: nn.Module, in_channels: int) -> None:
    """Replace the first ``Conv2d`` of ``net`` by one taking ``in_channels`` channels (same other args).

    Existing (e.g. pretrained) filters are adapted: summed over RGB for 1 channel, otherwise tiled over
    the new channels and rescaled by ``3 / in_channels`` (timm's ``adapt_input_conv`` rule).
    """
    name, old = next(
        ((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)), ("", None)
    )
    if old is None:
        raise ValueError(f"{type(net).__name__} has no Conv2d to adapt to {in_channels} channels")
    if old.in_channels == in_channels:
        return
    if old.groups != 1:
        raise ValueError(f"cannot adapt grouped first conv {name!r} to {in_channels} channels")
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        old.kernel_size,  # type: ignore[arg-type]
        stride=old.stride,  # type: ignore[arg-type]
        padding=old.padding,  # type: ignore[arg-type]
        dilation=old.dilation,  # type: ignore[arg-type]
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    with torch.no_grad():
        w = old.weight  # (K, C_old, kh, kw)
        if in_channels == 1:
            new.weight.copy_(w.sum(dim=1, keepdim=True))
        else:
            reps = -(-in_channels // w.shape[1])
            new.weight.copy_(w.repeat(1, reps, 1, 1)[:, :in_channels] * (w.shape[1] / in_channels))
        if old.bias is not None and new.bias is not None:
            new.bias.copy_(old.bias)
    _set_submodule(net, name, new)


def _replace_classifier(net: nn.Module, num_classes: int) -> None:
    name, old = None, None
    for n, m in net.named_modules():
        if isinstance(m, nn.Linear):
            name, old = n, m
    if name is None or old is None:
        raise ValueError(
            f"{type(net).__name__} has no Linear classifier to resize to {num_classes}"
        )
    if old.out_features != num_classes:
        _set_submodule(
            net, name, nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        )


def build_tv(
    name: str, *, num_classes: int, in_channels: int = 3, pretrained: bool = False, **kwargs: Any
) -> nn.Module:
    """``torchvision.models.get_model(name, ...)`` adapted to ``num_classes`` and ``in_channels``.

    Args:
        name: torchvision model name, e.g. ``"resnet18"``, ``"mobilenet_v2"``.
        num_classes: logits.
        in_channels: image channels (the first conv is replaced when not 3).
        pretrained: load torchvision's ``DEFAULT`` weights (downloads).
        **kwargs: passed to the torchvision constructor.
    """
    import torchvision.models as tvm

    if pretrained:
        logger.info("loading torchvision DEFAULT weights for %s", name)
        net = tvm.get_model(name, weights="DEFAULT", **kwargs)
        _replace_classifier(net, num_classes)
    else:
        net = tvm.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if in_channels != 3:
        replace_first_conv(net, in_channels)
    return net


@register_model("resnet18")
def resnet18(*, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """torchvision ResNet-18 (ImageNet stem: 7x7 stride-2 conv + max-pool); kwarg ``pretrained``."""
    return build_tv("resnet18", num_classes=num_classes, in_channels=in_channels, **kwargs)


@register_model("resnet50")
def resnet50(*, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """torchvision ResNet-50 **v1.5** (stride 2 in the 3x3 conv of each bottleneck, not the 1x1); kwarg
    ``pretrained``."""
    return build_tv("resnet50", num_classes=num_classes, in_channels=in_channels, **kwargs)


def tv_builder(tv_name: str) -> ModelBuilder:
    """The builder of torchvision classification model ``tv_name`` (``tv:<tv_name>``).

    Raises:
        UserError: ``tv_name`` is not a torchvision classification model (the valid ones listed).
    """
    valid = tv_classification_models()
    if tv_name not in valid:
        raise unknown_name("arch", TV_PREFIX + tv_name, [TV_PREFIX + n for n in valid])

    def builder(*, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
        return build_tv(tv_name, num_classes=num_classes, in_channels=in_channels, **kwargs)

    return builder


register_namespace(TV_PREFIX, tv_builder, "<torchvision model>")
