"""Layer-wise density allocation for a global target: uniform and Erdős–Rényi-Kernel (pure math).

Used by ``random`` pruning (Liu et al., "The Unreasonable Effectiveness of Random Pruning",
ICLR 2022) and by the sparsity report, which recomputes the allocation from the weight shapes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from robustbench_sparse.sparsity.config import LayerDistribution


def erk_raw(shape: Sequence[int]) -> float:
    """The unscaled ERK factor of a weight: ``sum(dims) / prod(dims)``.

    Conv ``(n_out, n_in, k_h, k_w)`` -> ``(n_in + n_out + k_h + k_w) / (n_in · n_out · k_h · k_w)``;
    Linear ``(n_out, n_in)`` -> ``(n_in + n_out) / (n_in · n_out)`` (the Erdős–Rényi form).
    """
    return float(sum(shape)) / float(math.prod(shape))


def erk_densities(shapes: Sequence[Sequence[int]], density: float) -> list[float]:
    """Per-layer ERK densities whose weighted mean over ``shapes`` is ``density``.

    ``density_l = min(1, eps · erk_raw(shape_l))`` with ``eps`` chosen so that
    ``sum_l density_l · numel_l = density · sum_l numel_l``. Layers whose scaled density would
    exceed 1 are made dense and ``eps`` is re-solved over the others (repeated until none
    exceeds 1), as in RigL's reference implementation (Evci et al. 2020).
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    numels = [math.prod(s) for s in shapes]
    raws = [erk_raw(s) for s in shapes]
    total = sum(numels)
    dense: set[int] = set()
    while True:
        budget = density * total - sum(numels[i] for i in dense)  # weights left to place
        weighted = sum(raws[i] * numels[i] for i in range(len(shapes)) if i not in dense)
        if weighted <= 0.0:
            break
        eps = budget / weighted
        over = {i for i in range(len(shapes)) if i not in dense and eps * raws[i] > 1.0}
        if not over:
            break
        dense |= over
    out = []
    for i in range(len(shapes)):
        out.append(1.0 if i in dense or weighted <= 0.0 else min(1.0, eps * raws[i]))
    return out


def layer_densities(
    shapes: Sequence[Sequence[int]], target: float, distribution: LayerDistribution
) -> list[float]:
    """Density of every layer for global sparsity ``target`` under ``distribution``."""
    if distribution is LayerDistribution.UNIFORM:
        return [1.0 - target for _ in shapes]
    return erk_densities(shapes, 1.0 - target)


def kept_count(numel: int, density: float) -> int:
    """Weights a layer of ``numel`` keeps at ``density``: nearest integer, at least 1."""
    return max(1, min(numel, math.floor(density * numel + 0.5)))
