"""Plain state dicts from other tools, made loadable: wrapper prefixes and ``torch.nn.utils.prune`` pairs.

- ``DataParallel`` / ``DistributedDataParallel`` save every key as ``module.<key>`` and
  ``torch.compile`` as ``_orig_mod.<key>`` (both, in either order, when combined):
  :func:`strip_wrapper_prefixes` removes them when *every* key carries them.
- ``torch.nn.utils.prune`` replaces a parameter ``p`` by ``p_orig`` (the dense values) and a buffer
  ``p_mask`` (0/1); the forward uses ``p_orig * p_mask``. :func:`fold_prune_masks` turns each pair back
  into ``p = p_orig * p_mask`` plus a boolean mask, exactly what ``prune.remove`` would save.
- Training scripts wrap the weights in a dict of their own (kuangliu's ``{'net': sd, 'acc': ..,
  'epoch': ..}``, ``{'model_state': sd}``, ``{'model': sd, 'ema': sd2, 'optimizer': ..}``):
  :func:`find_state_dict` takes the one state dict such a file holds, under whatever key, and
  refuses to guess between several.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch

from robustbench_sparse.datasets import DatasetInfo
from robustbench_sparse.errors import UserError

__all__ = [
    "KEY_FLAG",
    "WRAPPER_PREFIXES",
    "describe_normalization",
    "find_state_dict",
    "fold_prune_masks",
    "resolve_normalization",
    "strip_wrapper_prefixes",
]

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Key prefixes added by ``DataParallel``/DDP and by ``torch.compile``."""

_ORIG, _MASK = "_orig", "_mask"

KEY_FLAG = "--state-dict-key"
"""The command-line flag that names the entry holding the weights (:func:`find_state_dict`)."""

_MAX_DEPTH = 3  # how deep find_state_dict looks for nested state dicts ({'model': {'sd': ...}})

logger = logging.getLogger(__name__)


def _is_state_dict(obj: object) -> bool:
    """A non-empty mapping of string keys to tensors."""
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _candidates(obj: Mapping[object, object], path: str, depth: int) -> list[str]:
    """``/``-joined paths of the state dicts nested in ``obj`` (not descending into one)."""
    found: list[str] = []
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, Mapping):
            continue  # optimizer state ({int: {...}}) and scalars are no model weights
        where = f"{path}/{key}" if path else key
        if _is_state_dict(value):
            found.append(where)
        elif depth < _MAX_DEPTH:
            found += _candidates(value, where, depth + 1)
    return found


def _entry(obj: object, key: str) -> object:
    """``obj[key]`` where ``key`` is a top-level key, else a ``/``-joined path (``KeyError``)."""
    if isinstance(obj, Mapping) and key in obj:
        return obj[key]
    for part in key.split("/"):
        if not isinstance(obj, Mapping) or part not in obj:
            raise KeyError(key)
        obj = obj[part]
    return obj


def _kind(obj: object) -> str:
    """``a list``, ``an int``, ... (for messages)."""
    name = type(obj).__name__
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def _listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "") if keys else "none"


def find_state_dict(
    obj: object, key: str | None = None, where: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict (tensor name -> tensor) held by a loaded ``.pt`` object, and its key.

    Args:
        obj: what ``torch.load(weights_only=True)`` returned.
        key: the entry holding the weights (``--state-dict-key``): a top-level key, or a
            ``/``-joined path to a nested one (``model/ema``). ``None``: ``obj`` itself when it is a
            state dict, else the *one* state dict found in its entries (looked for
            :data:`_MAX_DEPTH` levels deep, through string keys only).
        where: what to call ``obj`` in messages (the file path).

    Returns:
        ``(state, key)``: the tensors (keys unchanged) and the key they came from (``None``: the
        object itself).

    Raises:
        UserError: no state dict in ``obj``; several and no ``key`` (the message lists them and
            names :data:`KEY_FLAG`); a ``key`` that is absent or does not hold a state dict.
    """
    found = _candidates(obj, "", 1) if isinstance(obj, Mapping) else []
    if key is not None:
        if _is_state_dict(obj):
            raise UserError(
                f"{where} is itself a state dict (it has no entry {key!r}); drop {KEY_FLAG}"
            )
        try:
            value = _entry(obj, key)
        except KeyError:
            raise UserError(
                f"{where} has no entry {key!r}; the state dicts it holds: {_listing(found)}"
            ) from None
        if not _is_state_dict(value):
            raise UserError(
                f"entry {key!r} of {where} is not a state dict of tensors (it holds "
                f"{_kind(value)}); the state dicts it holds: {_listing(found)}"
            )
        assert isinstance(value, Mapping)
        return dict(value), key
    if _is_state_dict(obj):
        assert isinstance(obj, Mapping)
        return dict(obj), None
    if not found:
        entries = [str(k) for k in obj] if isinstance(obj, Mapping) else []
        what = f"entries: {_listing(entries)}" if entries else _kind(obj)
        raise UserError(f"{where} does not contain a state dict of tensors ({what})")
    if len(found) > 1:
        raise UserError(
            f"{where} holds {len(found)} state dicts ({_listing(found)}); pick the one to load "
            f"with {KEY_FLAG} KEY"
        )
    value = _entry(obj, found[0])
    assert isinstance(value, Mapping)
    others = (
        [str(k) for k in obj if k != found[0].split("/")[0]] if isinstance(obj, Mapping) else []
    )
    logger.info(
        "%s: weights taken from its entry %r (other entries: %s)",
        where,
        found[0],
        ", ".join(others) or "none",
    )
    return dict(value), found[0]


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


def describe_normalization(norm: Mapping[str, object]) -> tuple[str, str]:
    """``(what was applied, how to change it)`` for a checkpoint's ``normalization`` record.

    ``norm`` is ``meta["normalization"]`` of a plain state dict (``mean``, ``std``, ``source`` as
    :func:`resolve_normalization` labels it, ``assumed``: no ``--normalize`` was given). E.g.
    ``("the dataset's mean/std (mean 0.5, std 0.25; assumed: ...)", "pass --normalize none if
    ...")``.
    """

    def values(key: str) -> str:
        raw = norm.get(key)
        items = raw if isinstance(raw, list | tuple) else []
        return ", ".join(f"{float(v):.4g}" for v in items)

    source = str(norm.get("source") or "dataset")
    numbers = f"mean {values('mean')}, std {values('std')}"
    if source == "none":
        what = "none (raw [0, 1] inputs)"
        how = "pass --normalize dataset (or --normalize MEAN,STD) if its network expects normalized inputs"
    elif source == "custom":
        what = f"the given {numbers}"
        how = "check --normalize (dataset, none or MEAN,STD)"
    else:
        what = f"the dataset's mean/std ({numbers})"
        how = (
            "pass --normalize none if its network takes raw [0, 1] inputs (or --normalize MEAN,STD)"
        )
    if norm.get("assumed"):
        what += "; assumed, the file does not record it"
    return what, how
