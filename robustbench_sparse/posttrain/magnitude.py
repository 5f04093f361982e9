"""One-shot masks and per-output-channel weight correction of layer-wise calibration.

Lazarevich, Kozlov & Malinin, "Post-training deep neural network pruning via layer-wise
calibration" (ICCV 2021 Workshops, arXiv 2104.15023); reference code: OpenVINO POT,
``tools/pot/openvino/tools/pot/algorithms/sparsity/magnitude_sparsity/algorithm.py``
(``MagnitudeSparsity._weights_preparation`` / ``_sparsify_node``).

- :func:`normalised_global_masks`: one global threshold on ``|w| / ||W_l||_2`` over all pruned
  layers (POT's default ``normed_threshold``), so layer sparsities differ: a layer whose weights
  are 100x larger is not spared for that reason alone (a raw-magnitude threshold would prune the
  small layer entirely).
- :func:`structured_masks`: Campfire's structured masks at one step (uniform per layer).
- :func:`correct_weights`: POT's ``correct_weight_bias``: per output channel ``k`` with
  ``w = W[k]`` flattened and ``s = w * mask[k]`` (zeros included),
  ``v = std(w) / (std(s) + 1e-9)`` (population std), ``m = mean(w) - mean(s * v)``,
  ``W'[k] = (w * v + m) * mask[k]``: the kept weights are scaled and shifted so the sparse filter
  keeps the dense filter's spread and mean.

Decisions where POT differs: the global ranking covers the pruned layers only (POT ranks every
weighted layer, ignored ones included, then prunes only the selected ones, so its achieved
sparsity over the pruned layers drifts from the target); POT adds float32 eps to every weight
before ranking and keeps it in the result (a quirk, not reproduced); ties are broken by position
(stable sort), so exactly ``floor(sparsity * N)`` weights are pruned, as POT's
``sorted[int(sparsity * N)]`` threshold does without ties.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustbench_sparse.sparsity.granularity import Granularity
from robustbench_sparse.sparsity.masks import compute_mask

__all__ = ["CORRECTION_EPS", "correct_weights", "normalised_global_masks", "structured_masks"]

#: POT's ``eps_factor`` default: keeps ``v`` finite for an all-zero sparse filter
CORRECTION_EPS = 1e-9


def normalised_global_masks(weights: dict[str, Tensor], sparsity: float) -> dict[str, Tensor]:
    """Keep-masks from one global ranking of layer-normalised magnitudes.

    Args:
        weights: parameter name -> weight (any shape; Conv2d ``(K, C, kh, kw)``, Linear ``(K, C)``).
        sparsity: fraction in ``[0, 1)`` of all these weights together to prune.

    Returns:
        name -> bool tensor of the weight's shape (True = kept). Exactly
        ``floor(sparsity * N)`` of the ``N`` weights are pruned: the smallest ``|w| / ||W||_2``,
        ties broken by position (layer order, then flat index).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    names = list(weights)
    scores = []
    for name in names:
        w = weights[name].detach().float().flatten()  # (numel,)
        norm = torch.linalg.vector_norm(w)
        scores.append(w.abs() / norm if norm > 0 else torch.zeros_like(w))
    flat = torch.cat(scores) if scores else torch.zeros(0)  # (N,)
    n_pruned = int(sparsity * flat.numel())
    order = torch.sort(flat, stable=True).indices  # (N,) ascending
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[order[:n_pruned]] = False
    out: dict[str, Tensor] = {}
    start = 0
    for name in names:
        w = weights[name]
        out[name] = keep[start : start + w.numel()].reshape(w.shape).to(w.device)
        start += w.numel()
    return out


def structured_masks(
    weights: dict[str, Tensor], sparsity: float, granularity: Granularity
) -> dict[str, Tensor]:
    """Campfire's one-shot keep-masks at ``sparsity`` per layer
    (:func:`~robustbench_sparse.sparsity.masks.compute_mask`, no previous mask)."""
    return {name: compute_mask(w, sparsity, granularity) for name, w in weights.items()}


@torch.no_grad()
def correct_weights(weight: Tensor, mask: Tensor, eps: float = CORRECTION_EPS) -> Tensor:
    """POT's per-output-channel variance and mean correction, then the pruned weights zeroed.

    Args:
        weight: ``(K, ...)`` dense weight; channel ``k`` is ``weight[k]``.
        mask: bool keep-mask of ``weight``'s shape.
        eps: added to the sparse channel's std (POT's ``eps_factor``).

    Returns:
        ``(K, ...)``: ``(w * v + m) * mask`` per channel (see the module docstring); ``+0.0``
        where ``mask`` is False (never ``-0.0``, as Campfire's masking).
    """
    w = weight.detach().double()
    k = w.shape[0]
    flat = w.reshape(k, -1)  # (K, D)
    keep = mask.reshape(k, -1).to(flat.device)  # (K, D)
    sparse = flat * keep  # (K, D), zeros included as in POT
    v = flat.std(dim=1, unbiased=False) / (sparse.std(dim=1, unbiased=False) + eps)  # (K,)
    m = flat.mean(dim=1) - (sparse * v[:, None]).mean(dim=1)  # (K,)
    corrected = (flat * v[:, None] + m[:, None]).masked_fill(~keep, 0.0)  # (K, D), +0.0 pruned
    return corrected.reshape(weight.shape).to(weight.dtype)
