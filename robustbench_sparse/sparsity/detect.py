"""Sparsity measured from the weights alone: the per-layer pattern and a report, for any checkpoint.

A checkpoint trained elsewhere (a plain ``.pt`` state dict pruned with ``torch.nn.utils.prune``, a
Campfire model exported by another tool, ...) carries no record of how it was pruned. Its zeros do:
this module counts them and names the structure they form, so its sparsity columns are honest.

Pattern of one Conv2d/Linear weight ``W[K, C, kh, kw]`` (``W[K, F]`` for Linear), tested in order:

==================  ==============================================================================
``dense``           no exact zero
``filter``          every filter ``W[k]`` is either entirely zero or entirely nonzero
``window``          every k×k kernel ``W[k, c]`` (k×k > 1) has the same number ``n_w < k·k`` of nonzeros
``channel``         every filter has the same number ``n_c < C`` of nonzero kernels, each kept kernel full
``combined``        ``n_c < C`` kernels per filter and ``n_w < k·k`` nonzeros in every kept kernel
``balanced-filter`` 1×1 conv / Linear: every output row keeps the same number of nonzeros
``unstructured``    zeros that match none of the above
==================  ==============================================================================

These are the Campfire granularities of :mod:`robustbench_sparse.sparsity.masks` (the structure its
masks impose), detected instead of configured. A weight that is exactly zero by accident would break
a structured pattern and read as ``unstructured``: that is the honest reading of such a tensor.

**Dense or pruned** (:func:`looks_pruned`): dense float weights hold exact zeros only by accident,
independently and rarely (a normal or uniform draw in float32 hits 0 about once in 2**24; a random
WRN-28-10 holds a few among its 36 M weights; underflow adds a handful). A layer therefore counts as
pruned only when its zeros are more than that: at least :data:`DENSE_ZERO_FRACTION` of its weights,
or a whole filter / output row or a whole k×k kernel zero (a group chance never zeroes: a lone zero
is 1 in 2**24, two in one group 1 in 2**48). Below both, its zeros are reported in the counts
(``achieved_all``) but the layer is dense, and a model with no pruned layer is ``dense``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from robustbench_sparse.sparsity.config import SparsityConfig
from robustbench_sparse.sparsity.report import LayerSparsity, SparsityReport, _layer
from robustbench_sparse.sparsity.selection import weight_layers

__all__ = [
    "DENSE_ZERO_FRACTION",
    "MEASURED_METHOD",
    "detect_pattern",
    "looks_pruned",
    "measured_sparsity_report",
    "model_pattern",
]

MEASURED_METHOD = "measured"
"""``SparsityReport.method`` of a report whose targets and granularities were read off the weights."""

DENSE_ZERO_FRACTION = 1e-3
"""Fewer exact zeros than this fraction of a layer's weights (and no all-zero group) is dense.

Two orders of magnitude above any accidental rate of float training or initialisation, and
two below the lowest sparsity pruning is used at (a few percent)."""

# Campfire granularities of k×k convolutions; 1×1 convs and Linear layers get "balanced-filter".
_CAMPFIRE = ("window", "channel", "combined")


def _all_equal(values: torch.Tensor) -> bool:
    return bool((values == values.reshape(-1)[0]).all()) if values.numel() else True


def detect_pattern(weight: torch.Tensor) -> str:
    """The sparsity pattern of one Conv2d ``(K, C, kh, kw)`` or Linear ``(K, F)`` weight.

    Returns one of ``dense``, ``filter``, ``window``, ``channel``, ``combined``,
    ``balanced-filter``, ``unstructured`` (see the module docstring for the rules).

    Raises:
        ValueError: for a weight that is neither 2-D nor 4-D.
    """
    if weight.ndim not in (2, 4):
        raise ValueError(
            f"expected a Linear (K, F) or Conv2d (K, C, kh, kw) weight, got {tuple(weight.shape)}"
        )
    nonzero = weight.detach() != 0
    if bool(nonzero.all()):
        return "dense"
    k = weight.shape[0]
    per_row = nonzero.reshape(k, -1).sum(dim=1)  # (K,) nonzeros per filter / output row
    row_size = nonzero[0].numel()
    if bool(((per_row == 0) | (per_row == row_size)).all()):
        return "filter"
    if weight.ndim == 4 and weight.shape[2] * weight.shape[3] > 1:
        kk = weight.shape[2] * weight.shape[3]
        channels = weight.shape[1]
        per_kernel = nonzero.reshape(k, channels, kk).sum(dim=-1)  # (K, C) nonzeros per kernel
        per_filter = (per_kernel > 0).sum(dim=-1)  # (K,) kept kernels per filter
        alive = per_kernel[per_kernel > 0]  # (kept kernels,)
        kernels_partial = _all_equal(alive) and int(alive[0]) < kk
        kernels_full = bool((alive == kk).all())
        filters_equal = _all_equal(per_filter) and int(per_filter[0]) < channels
        if int(per_filter.min()) == channels and kernels_partial:
            return "window"
        if filters_equal and kernels_full:
            return "channel"
        if filters_equal and kernels_partial:
            return "combined"
        return "unstructured"
    if _all_equal(per_row):
        return "balanced-filter"
    return "unstructured"


def looks_pruned(weight: torch.Tensor) -> bool:
    """Whether the exact zeros of a Conv2d ``(K, C, kh, kw)`` / Linear ``(K, F)`` weight are pruning.

    True when at least :data:`DENSE_ZERO_FRACTION` of the weights are zero, or some filter / output
    row (of >= 2 weights) or some k×k kernel (k×k > 1) is entirely zero; False for a dense weight
    with a few accidental zeros (see the module docstring).
    """
    zero = weight.detach() == 0
    if not bool(zero.any()):
        return False
    if float(zero.float().mean()) >= DENSE_ZERO_FRACTION:
        return True
    k = weight.shape[0]
    rows = zero.reshape(k, -1)  # (K, row size)
    if rows.shape[1] >= 2 and bool(rows.all(dim=1).any()):
        return True
    if weight.ndim == 4 and weight.shape[2] * weight.shape[3] > 1:
        kernels = zero.reshape(k * weight.shape[1], -1)  # (K*C, kh*kw)
        return bool(kernels.all(dim=1).any())
    return False


def model_pattern(patterns: Sequence[str]) -> str:
    """One label for a model from its layers' patterns (``dense`` layers ignored).

    A single Campfire granularity on the k×k convs (1×1 / Linear layers ``balanced-filter``, as
    Campfire does them) names the model; one shared pattern names it too; anything else is
    ``mixed``; no sparse layer at all is ``dense``.
    """
    sparse = {p for p in patterns if p != "dense"}
    if not sparse:
        return "dense"
    structured = sparse & set(_CAMPFIRE)
    if len(structured) == 1 and sparse <= structured | {"balanced-filter"}:
        return next(iter(structured))
    if len(sparse) == 1:
        return next(iter(sparse))
    return "mixed"


def measured_sparsity_report(model: nn.Module) -> SparsityReport:
    """Report every Conv2d/Linear weight of ``model`` from its zeros alone (no recorded config).

    A layer counts as pruned when :func:`looks_pruned` says so (a few accidental zeros leave it
    dense); its ``granularity`` is :func:`detect_pattern`'s, and its ``target`` and
    ``rounded_target`` are the achieved sparsity
    (no target was recorded). The report's ``target`` is the achieved sparsity over the pruned
    layers, ``granularity`` is :func:`model_pattern`'s and ``method`` is :data:`MEASURED_METHOD`.
    """
    config = SparsityConfig()  # unused: every layer gets an explicit allocation below
    layers: list[LayerSparsity] = []
    for module_name, module in weight_layers(model):
        name = f"{module_name}.weight" if module_name else "weight"
        weight = module.weight.detach()
        pattern = detect_pattern(weight)
        pruned = pattern != "dense" and looks_pruned(weight)
        layer = _layer(name, weight, pruned, config, (pattern, 0.0, None))
        if pruned:
            layer = dataclasses.replace(layer, target=layer.achieved)
        layers.append(layer)
    report = SparsityReport.from_layers(
        layers,
        target=0.0,
        granularity=model_pattern([layer.granularity for layer in layers]),
        method=MEASURED_METHOD,
    )
    return dataclasses.replace(report, target=report.achieved_pruned)  # no recorded target
