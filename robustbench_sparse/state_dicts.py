"""Plain state dicts from other tools, made loadable: wrapper prefixes and ``torch.nn.utils.prune`` pairs.

- ``DataParallel`` / ``DistributedDataParallel`` save every key as ``module.<key>`` and
  ``torch.compile`` as ``_orig_mod.<key>`` (both, in either order, when combined):
  :func:`strip_wrapper_prefixes` removes them when *every* key carries them.
- ``torch.nn.utils.prune`` replaces a parameter ``p`` by ``p_orig`` (the dense values) and a buffer
  ``p_mask`` (0/1); the forward uses ``p_orig * p_mask``. :func:`fold_prune_masks` turns each pair back
  into ``p = p_orig * p_mask`` plus a boolean mask, exactly what ``prune.remove`` would save.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from robustbench_sparse.datasets import DatasetInfo
from robustbench_sparse.errors import UserError

__all__ = [
    "WRAPPER_PREFIXES",
    "fold_prune_masks",
    "resolve_normalization",
    "strip_wrapper_prefixes",
]

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Key prefixes added by ``DataParallel``/DDP and by ``torch.compile``."""

_ORIG, _MASK = "_orig", "_mask"


def strip_wrapper_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with the wrapper prefixes removed, as long as every key starts with the same one."""
    out = dict(state)
    while out:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in out)), None)
        if prefix is None:
            break
        out = {k[len(prefix) :]: v for k, v in out.items()}
    return out


def fold_prune_masks(
    state: Mapping[str, torch.Tensor], where: str = "state dict"
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Fold ``torch.nn.utils.prune`` pairs: ``p_orig`` + ``p_mask`` -> ``p = p_orig * p_mask``.

    Args:
        state: a state dict; keys without a pair pass through unchanged.
        where: what to call ``state`` in error messages (e.g. the file path).

    Returns:
        ``(folded, masks)``: ``folded`` has ``p`` in place of each pair (pruned entries exactly
        ``+0.0``); ``masks`` maps ``p`` to its boolean mask (same shape as ``p``; True = kept).

    Raises:
        UserError: a ``p_orig`` without its ``p_mask`` (or the reverse), a mask whose shape differs
            from its weight, a mask holding values other than 0 and 1, or ``p`` present beside the pair.
    """
    folded: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    origs = {k[: -len(_ORIG)] for k in state if k.endswith(_ORIG)}
    mask_keys = {k[: -len(_MASK)] for k in state if k.endswith(_MASK)}
    for base in sorted(origs ^ mask_keys):
        have, lack = (base + _ORIG, base + _MASK) if base in origs else (base + _MASK, base + _ORIG)
        raise UserError(
            f"{where}: {have!r} has no matching {lack!r} (a torch.nn.utils.prune state dict "
            "needs both; or call prune.remove before saving)"
        )
    for key, value in state.items():
        if key.endswith(_MASK) and key[: -len(_MASK)] in origs:
            continue
        if not (key.endswith(_ORIG) and key[: -len(_ORIG)] in mask_keys):
            folded[key] = value
            continue
        base = key[: -len(_ORIG)]
        mask = state[base + _MASK]
        if base in state:
            raise UserError(
                f"{where}: has both {base!r} and the prune pair {key!r} / {base + _MASK!r}"
            )
        if tuple(mask.shape) != tuple(value.shape):
            raise UserError(
                f"{where}: prune mask {base + _MASK!r} has shape {tuple(mask.shape)} but "
                f"{key!r} has {tuple(value.shape)}"
            )
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise UserError(f"{where}: prune mask {base + _MASK!r} holds values other than 0 and 1")
        keep = mask.to(torch.bool)
        # where(), not multiply: a pruned entry is exactly +0.0 even if the original was inf/NaN.
        folded[base] = torch.where(keep, value, torch.zeros((), dtype=value.dtype))
        masks[base] = keep
    return folded, masks


def resolve_normalization(
    spec: str | None, info: DatasetInfo
) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """Per-channel ``(mean, std, label)`` a plain state dict's network expects in front of it.

    Args:
        spec: ``None`` or ``"dataset"``: the dataset's mean/std (the model normalises its
            ``[0, 1]`` input itself); ``"none"``: raw ``[0, 1]`` inputs (mean 0, std 1: many public
            checkpoints, e.g. RobustBench's, expect this); ``"MEAN,STD"``: one value each for every
            channel, or ``C`` means then ``C`` stds (``"0.4914,0.4822,0.4465,0.247,0.2435,0.2616"``).
        info: the dataset (channels and its mean/std).

    Returns:
        ``(mean, std, label)``, ``label`` being ``"dataset"``, ``"none"`` or ``"custom"``.

    Raises:
        UserError: an unparsable spec, a wrong count of values, or a std that is not positive.
    """
    channels = info.input_shape[0]
    key = (spec or "dataset").strip().lower()
    if key == "dataset":
        return info.mean, info.std, "dataset"
    if key == "none":
        return (0.0,) * channels, (1.0,) * channels, "none"
    try:
        values = [float(v) for v in key.split(",")]
    except ValueError:
        values = []
    if len(values) not in (2, 2 * channels) or not all(math.isfinite(v) for v in values):
        per_channel = f", or {channels} means then {channels} stds" if channels > 1 else ""
        raise UserError(
            f"--normalize {spec!r}: expected dataset, none, or MEAN,STD{per_channel} "
            "(comma-separated numbers)"
        )
    half = len(values) // 2
    mean, std = values[:half] * (channels // half), values[half:] * (channels // half)
    if any(v <= 0 for v in std):
        raise UserError(f"--normalize {spec!r}: std must be positive")
    return tuple(mean), tuple(std), "custom"
