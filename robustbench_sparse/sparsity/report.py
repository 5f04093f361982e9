"""Per-layer sparsity report computed from the actual zeros in the weights (works on checkpoints)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity.allocation import kept_count, layer_densities
from robustbench_sparse.sparsity.config import PruningMethod, SparsityConfig
from robustbench_sparse.sparsity.granularity import Granularity
from robustbench_sparse.sparsity.masks import (
    achievable_sparsity,
    applied_granularity,
    kept_per_group,
)
from robustbench_sparse.sparsity.selection import weight_layers


@dataclass(frozen=True)
class LayerSparsity:
    """Sparsity of one Conv2d/Linear weight.

    ``target`` is the requested sparsity (0 for dense layers); ``rounded_target`` is what the
    rounding rule can reach for this shape (see ``masks.kept_per_group``); ``achieved`` is
    ``1 - nnz / numel`` counted on the weights. ``kernel_nnz_min/max`` count nonzeros in the
    kernels that are not entirely zero (k×k convs with k×k > 1 only); ``filter_kernels_min/max``
    count nonzero kernels per filter (convs only). Either pair is ``None`` where it does not apply.
    ``filters_kept`` counts the filters ``W[k]`` that are not entirely zero (convs only).

    ``granularity`` names the structure the method imposed on this layer: a Campfire granularity
    (or ``balanced-filter``), ``random-uniform`` / ``random-erk``, ``grasp`` or ``filter``. For
    ``random-erk`` ``target`` is the layer's ERK allocation; for ``grasp`` (one global ranking,
    so no per-layer target exists) ``target`` is the global target and ``rounded_target`` the
    achieved value.
    """

    name: str
    shape: tuple[int, ...]
    kind: str
    granularity: str
    pruned: bool
    target: float
    rounded_target: float
    achieved: float
    numel: int
    nnz: int
    kernel_nnz_min: int | None = None
    kernel_nnz_max: int | None = None
    filter_kernels_min: int | None = None
    filter_kernels_max: int | None = None
    filters_kept: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (shape as a list)."""
        out = dataclasses.asdict(self)
        out["shape"] = list(self.shape)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerSparsity:
        """Inverse of :meth:`to_dict`."""
        data = dict(d)
        data["shape"] = tuple(int(x) for x in data["shape"])
        return cls(**data)


@dataclass(frozen=True)
class SparsityReport:
    """Sparsity of a whole model, always with its denominators.

    ``achieved_pruned = 1 - nnz_pruned / numel_pruned`` over the weights of the pruned layers;
    ``achieved_all = 1 - nnz_all / numel_all`` over all Conv2d/Linear weights (biases excluded).
    """

    layers: list[LayerSparsity]
    target: float
    granularity: str
    achieved_pruned: float
    achieved_all: float
    numel_pruned: int
    numel_all: int
    nnz_pruned: int
    nnz_all: int
    method: str = "campfire"

    @property
    def per_layer_target(self) -> dict[str, float]:
        """Layer name -> the target after the rounding rule (0 for dense layers)."""
        return {layer.name: layer.rounded_target for layer in self.layers}

    @property
    def pruned_names(self) -> list[str]:
        """Names of the pruned layers."""
        return [layer.name for layer in self.layers if layer.pruned]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["layers"] = [layer.to_dict() for layer in self.layers]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SparsityReport:
        """Inverse of :meth:`to_dict`."""
        data = dict(d)
        data["layers"] = [LayerSparsity.from_dict(x) for x in data["layers"]]
        return cls(**data)

    @classmethod
    def from_layers(
        cls, layers: list[LayerSparsity], *, target: float, granularity: str, method: str
    ) -> SparsityReport:
        """The report of ``layers`` with its totals: nonzeros and weights over the pruned layers
        and over all of them."""
        pruned = [layer for layer in layers if layer.pruned]
        numel_pruned = sum(layer.numel for layer in pruned)
        nnz_pruned = sum(layer.nnz for layer in pruned)
        numel_all = sum(layer.numel for layer in layers)
        nnz_all = sum(layer.nnz for layer in layers)
        return cls(
            layers=layers,
            target=target,
            granularity=granularity,
            achieved_pruned=1.0 - nnz_pruned / numel_pruned if numel_pruned else 0.0,
            achieved_all=1.0 - nnz_all / numel_all if numel_all else 0.0,
            numel_pruned=numel_pruned,
            numel_all=numel_all,
            nnz_pruned=nnz_pruned,
            nnz_all=nnz_all,
            method=method,
        )

    def format_table(self) -> str:
        """Plain-text aligned table, one row per layer, then the totals with their denominators."""
        header = (
            "layer",
            "kind",
            "shape",
            "granularity",
            "target",
            "rounded",
            "achieved",
            "nnz/numel",
            "kernel nnz",
            "kernels/filter",
            "filters kept",
        )
        rows = [header]
        for layer in self.layers:
            rows.append(
                (
                    layer.name,
                    layer.kind,
                    "x".join(str(s) for s in layer.shape),
                    layer.granularity,
                    f"{layer.target:.2%}",
                    f"{layer.rounded_target:.2%}",
                    f"{layer.achieved:.2%}",
                    f"{layer.nnz}/{layer.numel}",
                    _span(layer.kernel_nnz_min, layer.kernel_nnz_max),
                    _span(layer.filter_kernels_min, layer.filter_kernels_max),
                    "-" if layer.filters_kept is None else f"{layer.filters_kept}/{layer.shape[0]}",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append("")
        lines.append(
            f"target {self.target:.2%} ({self.granularity}, method {self.method}); "
            f"pruned layers: {self.achieved_pruned:.2%} sparse "
            f"({self.numel_pruned - self.nnz_pruned}/{self.numel_pruned} weights zero); "
            f"all Conv/Linear weights: {self.achieved_all:.2%} sparse "
            f"({self.numel_all - self.nnz_all}/{self.numel_all})"
        )
        return "\n".join(lines)


def _span(lo: int | None, hi: int | None) -> str:
    if lo is None or hi is None:
        return "-"
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _kind(weight: torch.Tensor) -> str:
    if weight.ndim == 4:
        return f"conv{weight.shape[2]}x{weight.shape[3]}"
    return "linear"


def _layer(
    name: str,
    weight: torch.Tensor,
    pruned: bool,
    config: SparsityConfig,
    allocation: tuple[str, float, float | None] | None = None,
) -> LayerSparsity:
    """``allocation`` = (label, target, rounded_target or None for "the achieved value")."""
    w = weight.detach()
    nonzero = w != 0
    numel = w.numel()
    nnz = int(nonzero.sum().item())
    shape = tuple(int(s) for s in w.shape)
    kernel_min = kernel_max = filter_min = filter_max = filters_kept = None
    if w.ndim == 4:
        per_kernel = nonzero.reshape(shape[0], shape[1], -1).sum(dim=-1)  # (K, C)
        per_filter = (per_kernel > 0).sum(dim=-1)  # (K,)
        filter_min, filter_max = int(per_filter.min().item()), int(per_filter.max().item())
        filters_kept = int((per_filter > 0).sum().item())
        if shape[2] * shape[3] > 1:
            alive = per_kernel[per_kernel > 0]  # (n_alive_kernels,)
            if alive.numel() > 0:
                kernel_min, kernel_max = int(alive.min().item()), int(alive.max().item())
    achieved = 1.0 - nnz / numel
    if not pruned:
        label, target, rounded = "dense", 0.0, 0.0
    elif allocation is not None:
        label, target, maybe = allocation
        rounded = achieved if maybe is None else maybe
    else:
        label = applied_granularity(shape, config.granularity)
        target = config.target
        rounded = achievable_sparsity(shape, target, config.granularity, config.nm_pair)
    return LayerSparsity(
        name=name,
        shape=shape,
        kind=_kind(w),
        granularity=label,
        pruned=pruned,
        target=target,
        rounded_target=rounded,
        achieved=achieved,
        numel=numel,
        nnz=nnz,
        kernel_nnz_min=kernel_min,
        kernel_nnz_max=kernel_max,
        filter_kernels_min=filter_min,
        filter_kernels_max=filter_max,
        filters_kept=filters_kept,
    )


def _allocations(
    config: SparsityConfig, shapes: dict[str, tuple[int, ...]]
) -> dict[str, tuple[str, float, float | None]]:
    """Per pruned layer: (label, target, rounded target) for the non-Campfire methods."""
    method = config.method
    if method is PruningMethod.RANDOM:
        names = list(shapes)
        densities = layer_densities(
            [shapes[n] for n in names], config.target, config.random_distribution
        )
        out: dict[str, tuple[str, float, float | None]] = {}
        for name, density in zip(names, densities, strict=True):
            numel = math.prod(shapes[name])
            out[name] = (
                config.label,
                1.0 - density,
                1.0 - kept_count(numel, density) / numel,
            )
        return out
    if method in (PruningMethod.GRASP, PruningMethod.AUTOSPARSE) or (
        method is PruningMethod.CALIBRATED and config.granularity is Granularity.UNSTRUCTURED
    ):  # a global ranking or learned thresholds: no per-layer target, the achieved stands for it
        return {name: (config.label, config.target, None) for name in shapes}
    if method is PruningMethod.FILTER:
        return {
            name: (
                "filter",
                config.target,
                1.0 - kept_per_group(shape[0], config.target) / shape[0],
            )
            for name, shape in shapes.items()
        }
    return {}


def sparsity_report(
    model: nn.Module, config: SparsityConfig, pruned_names: Iterable[str]
) -> SparsityReport:
    """Report every Conv2d/Linear weight of ``model`` from its actual zeros.

    ``pruned_names`` are parameter names (``"net.conv2.weight"``) or module names
    (``"net.conv2"``) of the layers that were pruned; an unknown name raises ``UserError``.
    """
    wanted = set(pruned_names)
    found: set[str] = set()
    entries: list[tuple[str, torch.Tensor, bool]] = []
    for module_name, module in weight_layers(model):
        param_name = f"{module_name}.weight" if module_name else "weight"
        pruned = param_name in wanted or module_name in wanted
        if pruned:
            found.update({param_name, module_name})
        entries.append((param_name, module.weight, pruned))
    allocation = _allocations(
        config, {n: tuple(int(s) for s in w.shape) for n, w, pruned in entries if pruned}
    )
    layers = [
        _layer(name, weight, pruned, config, allocation.get(name))
        for name, weight, pruned in entries
    ]
    missing = sorted(wanted - found)
    if missing:
        raise UserError(
            f"pruned layers not found among the model's Conv2d/Linear weights: {', '.join(missing)}"
        )
    return SparsityReport.from_layers(
        layers, target=config.target, granularity=config.label, method=config.method.value
    )
