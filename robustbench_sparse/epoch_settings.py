"""Epoch-valued settings fitted to the epoch count: :func:`fit_derived_epochs` and its rules.

A setting measured in epochs (LR warm-up, LR milestones / step, pruning start / end, the
adversarial eps warm-up) that a *lower* configuration layer wrote for another epoch count is
rescaled with the final ``epochs``; one the user gave at the ``epochs`` layer or above is kept and
checked (it is refused when it does not fit).
"""

from __future__ import annotations

import logging
from typing import Any, TypeGuard

logger = logging.getLogger(__name__)

__all__ = [
    "ADVERSARIAL_EPOCH_KEYS",
    "SPARSITY_EPOCH_KEYS",
    "TRAIN_EPOCH_KEYS",
    "fit_derived_epochs",
]

#: epoch-valued settings: key -> (how the user sets it, does the value fit ``epochs``?); the LR
#: step / milestones are fitted only under the schedule that uses them
_FitRule = tuple[str, Any]
TRAIN_EPOCH_KEYS: dict[str, _FitRule] = {
    "warmup_epochs": ("--warmup-epochs / [train] warmup_epochs", lambda v, e: v <= e),
    "milestones": ("--milestones / [train] milestones", lambda v, e: all(m < e for m in v)),
    "step_size": ("[train] step_size", lambda v, e: v < e),
}
SPARSITY_EPOCH_KEYS: dict[str, _FitRule] = {
    "start": ("--prune-start / [sparsity] start", lambda v, e: v <= e),
    "end": ("--prune-end / [sparsity] end", lambda v, e: v <= e),
}
#: the eps warm-up must end before training does: the model is labelled with ``eps``
ADVERSARIAL_EPOCH_KEYS: dict[str, _FitRule] = {
    "eps_warmup_epochs": ("--adv-eps-warmup / [adversarial] eps_warmup_epochs", lambda v, e: v < e),
}
_LAYER_NAMES = ("the dataset defaults", "the config file / recipe", "the command line")


def _top_layer(key: str, layers: list[dict[str, Any]]) -> int:
    """Index of the highest-precedence layer that sets ``key`` (-1: none)."""
    return max((i for i, layer in enumerate(layers) if key in layer), default=-1)


def _is_number(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fit_derived_epochs(
    layers: list[dict[str, Any]],
    train_layers: list[dict[str, Any]],
    rules: dict[str, _FitRule],
    *,
    joint: bool = False,
) -> dict[str, Any]:
    """Merge precedence ``layers`` (defaults, config file, flags); fit derived epoch settings.

    An epoch-valued setting (warmup, LR milestones / step, pruning start / end, eps warm-up) that comes from a
    *lower* layer than ``epochs`` (e.g. a recipe's 5 warmup epochs when ``--epochs 1`` is given)
    and does not fit the final epoch count is rescaled with it, ``value × epochs / E`` where ``E``
    is the epoch count of the layer it came from; an INFO line says so and names the flag that
    sets it explicitly. A value given at the same layer as ``epochs`` or above is the user's own
    and is never changed (the config checks then name it if it does not fit).
    ``train_layers`` are the ``[train]`` layers (where ``epochs`` lives); for ``[train]`` itself
    they are ``layers``. Non-numeric values are left for the config checks to refuse. With
    ``joint`` (the pruning window) all derived settings are rescaled together as soon as one of
    them does not fit, so their order (``start <= end``) is kept.
    """
    merged = {k: v for layer in layers for k, v in layer.items()}
    epochs = {k: v for layer in train_layers for k, v in layer.items()}.get("epochs")
    if not _is_number(epochs) or epochs < 1:
        return merged
    epochs_layer = _top_layer("epochs", train_layers)
    derived = {}  # key -> (layer, value, numbers, is_list, fits now)
    for key, (_, fits) in rules.items():
        layer = _top_layer(key, layers)
        value: Any = merged.get(key)
        is_list = isinstance(value, (list, tuple))
        numbers: list[Any] = list(value) if is_list else [value]
        if 0 <= layer < epochs_layer and all(_is_number(v) for v in numbers):
            derived[key] = (layer, value, numbers, is_list, bool(fits(value, epochs)))
    misfit = any(not ok for *_, ok in derived.values())
    for key, (layer, value, numbers, is_list, ok) in derived.items():
        how = rules[key][0]
        if ok and not (joint and misfit):
            continue
        ref = next(
            (
                train_layers[i]["epochs"]
                for i in range(layer, -1, -1)
                if "epochs" in train_layers[i]
            ),
            None,
        )
        if not _is_number(ref) or ref <= 0:
            continue
        scaled = [round(float(v) * epochs / ref, 3) for v in numbers]
        merged[key] = scaled if is_list else scaled[0]
        logger.info(
            "%s = %s from %s (written for %s epochs) does not fit %s epochs; rescaled to %s "
            "(set %s to choose it yourself)",
            key,
            value,
            _LAYER_NAMES[min(layer, 2)],
            ref,
            epochs,
            merged[key],
            how,
        )
    return merged
