"""Per-module channel widths: read them off a model and rebuild a registry model at them.

A *thin* checkpoint (``rbs export --format thin``) has fewer channels in some layers than its
architecture builds by default. Its ``checkpoint.json`` records those layers' widths
(``thin.widths``: module name -> ``{"in": C, "out": K, "groups": G}`` for ``Conv2d`` / ``Linear``,
``{"features": n}`` for ``BatchNorm``), and :func:`apply_widths` replaces exactly those modules
of a freshly built model with same-hyper-parameter modules of the recorded widths before the
weights load. No code is stored or executed; the forward of the architecture is unchanged, so
any model whose forward reads its layers as modules (every registry model) rebuilds this way.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from robustbench_sparse.errors import UserError

__all__ = ["Widths", "apply_widths", "changed_widths", "module_widths"]

#: module name -> {"in", "out", "groups"} (Conv2d / Linear) or {"features"} (BatchNorm1d/2d)
Widths = dict[str, dict[str, int]]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def module_widths(model: nn.Module) -> Widths:
    """The widths of every ``Conv2d``, ``Linear`` and ``BatchNorm1d/2d`` module of ``model``."""
    out: Widths = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            out[name] = {
                "in": module.in_channels,
                "out": module.out_channels,
                "groups": module.groups,
            }
        elif isinstance(module, nn.Linear):
            out[name] = {"in": module.in_features, "out": module.out_features, "groups": 1}
        elif isinstance(module, _BN):
            out[name] = {"features": module.num_features}
    return out


def changed_widths(before: Widths, after: Widths) -> Widths:
    """The entries of ``after`` that differ from ``before`` (what a thin checkpoint records)."""
    return {name: w for name, w in after.items() if before.get(name) != w}


def _resized(module: nn.Module, width: Mapping[str, int]) -> nn.Module:
    device = next((p.device for p in module.parameters()), None)
    if isinstance(module, nn.Conv2d):
        new: nn.Module = nn.Conv2d(
            int(width["in"]),
            int(width["out"]),
            module.kernel_size,  # type: ignore[arg-type]
            stride=module.stride,  # type: ignore[arg-type]
            padding=module.padding,  # type: ignore[arg-type]
            dilation=module.dilation,  # type: ignore[arg-type]
            groups=int(width.get("groups", 1)),
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
        )
    elif isinstance(module, nn.Linear):
        new = nn.Linear(int(width["in"]), int(width["out"]), bias=module.bias is not None)
    elif isinstance(module, _BN):
        new = type(module)(
            int(width["features"]),
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        )
    else:
        raise UserError(
            f"thin widths name a {type(module).__name__}; only Conv2d, Linear and BatchNorm "
            "modules can be resized"
        )
    return new if device is None else new.to(device)


def apply_widths(model: nn.Module, widths: Mapping[str, Mapping[str, int]]) -> None:
    """Replace every module named in ``widths`` by one of those widths (in place, fresh weights).

    Raises:
        UserError: a name that is not a module of ``model``, a module that cannot be resized,
            or a width that is not a positive integer.
    """
    for name, width in widths.items():
        if not isinstance(width, Mapping) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in width.values()
        ):
            raise UserError(f"thin width of {name} must map to positive integers, got {width!r}")
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise UserError(
                f"thin widths name {name!r}, which is not a module of this architecture"
            ) from None
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _resized(module, width))
