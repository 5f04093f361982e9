"""Where ToST's fixed mask comes from, and ToST's layer-wise rescaling of the initial weights.

ToST (Jaiswal et al., ICML 2022, arXiv 2206.12755) trains a *given* mask; this product gives it:

- :func:`campfire_masks_at_init`: Campfire's structured mask of a granularity at the target,
  computed once from the *initial* weights' magnitudes (magnitude pruning at init);
- :func:`~robustbench_sparse.sparsity.methods.random.random_masks` (uniform / ERK densities),
  used by :class:`~robustbench_sparse.sparsity.methods.tost.TostSparsifier` directly;
- :func:`checkpoint_masks`: the masks saved in another robustbench-sparse checkpoint (read
  with safetensors, which never executes code); trained from this run's seeded initialization,
  that is lottery-ticket rewinding to iteration 0.

:func:`rescale_kept` is the layer-wise rescaling: ToST's reference code runs GradInit (Zhu et
al. 2021, a learned per-layer scale, ``LRsI/gradinit_utils.py``) on the *dense* model; here the
closed-form variance-preserving version is used: each pruned layer's weights are multiplied by
``1 / sqrt(density_l)``, so a layer's pre-activation variance at init matches the dense layer's
(i.i.d. zero-mean weights). GradInit itself is not implemented.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from robustbench_sparse.checkpoint_files import (
    MASK_PREFIX,
    load_safetensors,
    read_meta,
    resolve_checkpoint_files,
    sha256_file,
)
from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity.granularity import Granularity
from robustbench_sparse.sparsity.masks import compute_mask

__all__ = ["campfire_masks_at_init", "checkpoint_masks", "match_masks", "rescale_kept"]

logger = logging.getLogger(__name__)


def campfire_masks_at_init(
    weights: Mapping[str, Tensor], sparsity: float, granularity: Granularity
) -> dict[str, Tensor]:
    """Per weight, Campfire's bool keep-mask (same shape) at ``sparsity`` from ``|w|`` now."""
    return {name: compute_mask(w.detach(), sparsity, granularity) for name, w in weights.items()}


def checkpoint_masks(path: str | Path) -> dict[str, Tensor]:
    """The bool masks a robustbench-sparse checkpoint saved, keyed by parameter name (CPU).

    Raises:
        UserError: not a checkpoint directory / ``.safetensors`` of this format, torn files, or
            a checkpoint without masks (a dense model).
    """
    p = Path(path)
    if p.suffix in (".pt", ".pth", ".rbsp") or not p.exists():
        raise UserError(
            f"--mask-from {p}: give a robustbench-sparse checkpoint directory "
            "(an `rbs train --out` directory of a pruned model)"
        )
    weights_path, meta_path = resolve_checkpoint_files(p)
    meta = read_meta(meta_path)
    expected = meta.get("weights_sha256")
    if expected is not None and sha256_file(weights_path) != expected:
        raise UserError(
            f"--mask-from {weights_path} does not match {meta_path.name} (torn pair): re-create "
            "or re-train that checkpoint"
        )
    tensors = load_safetensors(weights_path)
    masks = {
        k[len(MASK_PREFIX) :]: v.to(torch.bool)
        for k, v in tensors.items()
        if k.startswith(MASK_PREFIX)
    }
    if not masks:
        raise UserError(f"--mask-from {p} holds no masks (a dense model); give a pruned one")
    if meta.get("masks_frozen") is False:
        logger.warning("--mask-from %s: its masks were still changing when it was saved", p)
    return masks


def match_masks(
    masks: Mapping[str, Tensor], weights: Mapping[str, Tensor], source: str
) -> dict[str, Tensor]:
    """``masks`` on the weights' devices, after checking each names a weight of the same shape.

    Raises:
        UserError: a mask names no weight of this model, or its shape differs.
    """
    out = {}
    for name, mask in masks.items():
        weight = weights.get(name)
        if weight is None:
            raise UserError(
                f"--mask-from {source}: mask {name!r} names no Conv2d/Linear weight of this "
                "model; train the --arch of that checkpoint"
            )
        if tuple(mask.shape) != tuple(weight.shape):
            raise UserError(
                f"--mask-from {source}: mask {name} has shape {tuple(mask.shape)}, this "
                f"model's weight {tuple(weight.shape)}; train the --arch, --arch-kwargs and dataset "
                "of that checkpoint"
            )
        out[name] = mask.to(device=weight.device, dtype=torch.bool)
    return out


def rescale_kept(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, float]:
    """Multiply each weight in place by ``1 / sqrt(density)`` of its mask; the factors by name.

    A layer whose mask keeps nothing (density 0) is left alone.
    """
    factors = {}
    with torch.no_grad():
        for name, mask in masks.items():
            density = float(mask.float().mean())
            factor = 1.0 / math.sqrt(density) if density > 0 else 1.0
            weights[name].mul_(factor)
            factors[name] = factor
    return factors
