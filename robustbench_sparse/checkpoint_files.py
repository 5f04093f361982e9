"""Checkpoint files at the byte level: names, format constants and safe readers.

Shared by :mod:`robustbench_sparse.checkpoint` (models from checkpoints) and
:mod:`robustbench_sparse.export` (the packed form), which both build on it and on nothing of
each other's. Nothing here executes pickled code: safetensors headers are validated before
anything is allocated and plain state dicts are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from robustbench_sparse.errors import UserError
from robustbench_sparse.state_dicts import find_state_dict, strip_wrapper_prefixes

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MASK_PREFIX",
    "MAX_HEADER_BYTES",
    "META_FILE",
    "PACKED_SUFFIX",
    "WEIGHTS_FILE",
    "check_finite",
    "check_safetensors_header",
    "load_plain_state_dict",
    "load_safetensors",
    "read_meta",
    "resolve_checkpoint_files",
    "sha256_file",
]

WEIGHTS_FILE = "checkpoint.safetensors"
META_FILE = "checkpoint.json"
FORMAT = "robustbench-sparse-checkpoint"
PACKED_SUFFIX = ".rbsp"  # `rbs export --format packed` (robustbench_sparse.export)
FORMAT_VERSION = 1
MASK_PREFIX = "__mask__."
# A safetensors header larger than this is not a model header: refuse before allocating it.
MAX_HEADER_BYTES = 100 * 1024 * 1024


def sha256_file(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_safetensors_header(path: Path) -> None:
    """Validate the safetensors header size and offsets before anything is allocated."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise UserError(
                f"{path} is truncated (no safetensors header); re-create the checkpoint"
            )
        (header_len,) = struct.unpack("<Q", head)
        if header_len > MAX_HEADER_BYTES or header_len > size - 8:
            raise UserError(
                f"{path} is corrupt: safetensors header claims {header_len} bytes "
                f"but the file has {size}; re-create the checkpoint"
            )
        try:
            header = json.loads(fh.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UserError(f"{path} is corrupt: unreadable safetensors header") from None
    if not isinstance(header, dict):
        raise UserError(f"{path} is corrupt: safetensors header is not a mapping")
    data_len = size - 8 - header_len
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not 0 <= offsets[0] <= offsets[1] <= data_len
        ):
            raise UserError(
                f"{path} is corrupt or truncated: tensor {name!r} lies outside the file; "
                "re-create the checkpoint"
            )


def read_meta(path: Path) -> dict[str, Any]:
    """A ``checkpoint.json``: valid JSON of this format with the fields every loader needs."""
    if not path.is_file():
        raise UserError(f"checkpoint metadata {path} is missing; was the checkpoint written fully?")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"checkpoint metadata {path} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path} is not a robustbench-sparse checkpoint description")
    for key in ("arch", "num_classes", "in_channels", "dataset"):
        if key not in meta:
            raise UserError(f"checkpoint metadata {path} lacks the field {key!r}")
    return meta


def check_finite(state: dict[str, torch.Tensor], where: Path) -> None:
    """Refuse tensors holding NaN or Inf (a diverged or corrupt checkpoint)."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(
                f"{where}: tensor {name!r} contains NaN or Inf values; refusing to use it"
            )


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file after validating its header; corrupt files are user errors."""
    if not path.is_file():
        raise UserError(f"checkpoint weights {path} do not exist")
    check_safetensors_header(path)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable safetensors file ({exc})") from None


def _unpickling_reason(exc: Exception) -> str:
    """The short reason in torch's long weights-only error (e.g. ``Unsupported global: ...``)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch puts ANSI bold in the message
    found = re.search(
        r"WeightsUnpickler error: (.*?)(?: was not an allowed global|\.?\s*$)", text, re.M
    )
    if found:
        return found.group(1).strip()[:160]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:160] if lines else "unsupported object"


def load_plain_state_dict(
    path: Path, key: str | None = None
) -> tuple[dict[str, torch.Tensor], str | None]:
    """Load a ``.pt`` / ``.pth`` state dict without executing any pickled code.

    The file may hold the state dict itself or wrap it in a dict of its own (``{'net': sd,
    'epoch': ..}``, ``{'model': sd, 'ema': sd2}``): ``key`` names the entry (a ``/``-joined path
    for a nested one); without it the one state dict the file holds is taken (see
    :func:`~robustbench_sparse.state_dicts.find_state_dict`). Wrapper prefixes (``module.``,
    ``_orig_mod.``) are removed.

    Returns:
        ``(state, key)``: the tensors and the entry they came from (``None``: the whole file).

    Raises:
        UserError: a missing or unreadable file, pickled objects, no state dict, several without
            ``key``, or a ``key`` that holds none.
    """
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"refusing to load {path}: it holds pickled Python objects, not only tensors "
            f"({_unpickling_reason(exc)}); save a plain state dict or convert it to safetensors"
        ) from None
    except Exception as exc:  # garbage input makes the unpickler raise anything
        # (IndexError, KeyError, ... on non-pickle bytes); weights_only already forbids code.
        raise UserError(
            f"{path} is not a readable PyTorch file ({type(exc).__name__}: {exc})"
        ) from None
    state, used = find_state_dict(obj, key, str(path))
    # DataParallel / DDP prefix every key with "module.", torch.compile with "_orig_mod.".
    return strip_wrapper_prefixes(state), used


def resolve_checkpoint_files(path: str | Path) -> tuple[Path, Path]:
    """Map a directory or a ``.safetensors`` / ``.json`` path to (weights, meta) paths."""
    p = Path(path)
    if p.is_dir():
        return p / WEIGHTS_FILE, p / META_FILE
    if p.suffix == ".json":
        return p.with_suffix(".safetensors"), p
    if p.suffix == ".safetensors":
        return p, p.with_suffix(".json")
    if not p.exists():
        raise UserError(f"checkpoint {str(p)!r} does not exist")
    raise UserError(
        f"cannot tell what {str(p)!r} is: pass a checkpoint directory, a .safetensors file, "
        f"a packed {PACKED_SUFFIX} file, or a .pt/.pth state dict with --arch and --dataset"
    )
