"""Sparsity of a thinned model (FilterSketch, ``rbs export --format thin``) against its dense shapes.

A thinned model is physically narrower: its layers hold fewer weights and few or no zeros, so a
report counted on its own weights (:func:`~robustbench_sparse.sparsity.detect.measured_sparsity_report`)
says ~0 % where 70 % of the filters were removed. Here every Conv2d/Linear weight is compared with
the same layer of the architecture at its dense widths:

- a layer is *pruned* when its weight is smaller than the dense one or carries a pruning pattern
  of zeros (masks applied to the thin model);
- its ``numel`` is the dense layer's; ``nnz`` counts the thin weight's nonzeros, so
  ``achieved = 1 - nnz / numel`` is the share of the dense layer's weights that are removed or zero;
- ``achieved_pruned = 1 - nnz_pruned / numel_pruned`` over the dense weights of the pruned layers
  (the denominator of every other method's figure: the pruned layers' weights) and
  ``achieved_all`` over every layer's dense weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from robustbench_sparse.sparsity.report import LayerSparsity, SparsityReport

__all__ = ["thinned_sparsity_report"]


def thinned_sparsity_report(
    thin: SparsityReport,
    dense_numel: Mapping[str, int],
    *,
    target: float,
    granularity: str,
    method: str,
) -> SparsityReport:
    """``thin`` (a report counted on the thin model's own weights) restated against
    ``dense_numel`` (weight name -> element count at the architecture's dense widths).

    Raises:
        ValueError: a layer of ``thin`` that the dense architecture lacks, or one larger than its
            dense counterpart (the two do not describe the same network).
    """
    layers: list[LayerSparsity] = []
    for layer in thin.layers:
        if layer.name not in dense_numel:
            raise ValueError(f"layer {layer.name!r} is not in the dense architecture")
        full = int(dense_numel[layer.name])
        if layer.numel > full:
            raise ValueError(f"layer {layer.name!r} has {layer.numel} weights, dense {full}")
        thinned = layer.numel < full
        if not (thinned or layer.pruned):
            layers.append(layer)
            continue
        achieved = 1.0 - layer.nnz / full
        if not thinned:  # full width, masked
            label = layer.granularity
        else:  # narrower: the thinning method's name, with the pattern of any zeros left
            label = f"{layer.granularity}+thin" if layer.pruned else granularity
        layers.append(
            dataclasses.replace(
                layer,
                granularity=label,
                pruned=True,
                target=target,
                rounded_target=achieved,
                achieved=achieved,
                numel=full,
            )
        )
    return SparsityReport.from_layers(
        layers, target=float(target), granularity=granularity, method=method
    )
