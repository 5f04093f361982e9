"""Packed export of a checkpoint directory: write, compare and verify its packed form.

The file format (encodings, binary layout, signed zeros) is documented in
:mod:`robustbench_sparse.packed_format`; the position codes in
:mod:`robustbench_sparse.packed_codes`.
:func:`pack_checkpoint` writes the packed form of a checkpoint, :func:`compare_packed` /
:func:`verify_packed` check that it reproduces the checkpoint bit for bit, and
:func:`~robustbench_sparse.checkpoint.load_checkpoint` loads a packed file directly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robustbench_sparse.atomic import atomic_path
from robustbench_sparse.checkpoint_files import (
    MASK_PREFIX,
    load_safetensors,
    resolve_checkpoint_files,
    sha256_file,
)
from robustbench_sparse.errors import UserError
from robustbench_sparse.packed_format import (
    FORMAT,
    MAGIC,
    LayerStats,
    pack_tensors,
    read_header,
    unpack,
)

__all__ = [
    "FORMAT",
    "MAGIC",
    "LayerStats",
    "PackStats",
    "VerifyReport",
    "compare_packed",
    "pack_checkpoint",
    "pack_tensors",
    "unpack",
    "verify_packed",
]


@dataclass
class PackStats:
    """What :func:`pack_checkpoint` wrote and how it compares with the dense file and the bound."""

    packed_bytes: int
    dense_bytes: int  # the checkpoint's safetensors file (weights + bool masks)
    dense_weight_bytes: int  # raw bytes of all non-mask tensors (no masks, no header)
    bound_bytes: float  # raw bytes of dense tensors + bound of each sparse layer
    layers: list[LayerStats] = field(default_factory=list)

    @property
    def ratio_to_bound(self) -> float:
        """Packed size / information bound (goal: <= 1.1)."""
        return self.packed_bytes / self.bound_bytes if self.bound_bytes else math.nan

    @property
    def ratio_to_dense(self) -> float:
        """Packed size / dense safetensors size."""
        return self.packed_bytes / self.dense_bytes if self.dense_bytes else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary."""
        return {
            "packed_bytes": self.packed_bytes,
            "dense_bytes": self.dense_bytes,
            "dense_weight_bytes": self.dense_weight_bytes,
            "bound_bytes": self.bound_bytes,
            "ratio_to_bound": self.ratio_to_bound,
            "ratio_to_dense": self.ratio_to_dense,
            "layers": [vars(s) for s in self.layers],
        }


@dataclass
class VerifyReport:
    """Outcome of comparing a packed file with its source checkpoint."""

    identical: bool  # every tensor bit-identical (pruned zeros: see negative_zeros)
    mismatched: list[str]  # tensor names that differ (missing/extra included)
    negative_zeros: int  # pruned -0.0 in the source restored as +0.0 (signed_zeros=False files)
    tensors: int


def pack_checkpoint(
    ckpt_dir: str | Path,
    out_file: str | Path,
    *,
    overwrite: bool = False,
    signed_zeros: bool = False,
) -> PackStats:
    """Write the packed form of checkpoint ``ckpt_dir`` to ``out_file`` (atomically)."""
    weights, meta_path = resolve_checkpoint_files(ckpt_dir)
    out = Path(out_file)
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    if out.exists() and out.is_dir():
        raise UserError(f"{out} is a directory; give a file name")
    tensors = load_safetensors(weights)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{meta_path} is not readable JSON") from None
    data, layers = pack_tensors(
        tensors, source_sha256=sha256_file(weights), signed_zeros=signed_zeros, meta=meta
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    encoded = {s.name for s in layers}
    dense_raw = 0
    for name, t in tensors.items():
        if name.startswith(MASK_PREFIX):
            if name[len(MASK_PREFIX) :] not in encoded:
                dense_raw += t.numel() * t.element_size()
        elif name not in encoded:
            dense_raw += t.numel() * t.element_size()
    bound_bits = sum(s.value_bits + s.bound_code_bits for s in layers)
    weight_bytes = sum(
        t.numel() * t.element_size() for n, t in tensors.items() if not n.startswith(MASK_PREFIX)
    )
    return PackStats(
        packed_bytes=len(data),
        dense_bytes=weights.stat().st_size,
        dense_weight_bytes=weight_bytes,
        bound_bytes=dense_raw + bound_bits / 8,
        layers=layers,
    )


def compare_packed(ckpt_dir: str | Path, file: str | Path) -> VerifyReport:
    """Unpack ``file`` and compare every tensor bit for bit with checkpoint ``ckpt_dir``.

    A pruned position that is ``-0.0`` in the source and ``+0.0`` in a file packed without
    ``signed_zeros`` is counted in ``negative_zeros``, not as a mismatch (see the module docs).
    """
    weights, _ = resolve_checkpoint_files(ckpt_dir)
    source = load_safetensors(weights)
    packed = unpack(file)
    mismatched = sorted(set(source) ^ set(packed))
    negzeros = 0
    for name in sorted(set(source) & set(packed)):
        a, b = source[name], packed[name]
        if a.dtype != b.dtype or a.shape != b.shape:
            mismatched.append(name)
            continue
        if a.numel() == 0:
            continue
        ab = a.contiguous().reshape(-1).view(torch.uint8).reshape(a.numel(), -1)
        bb = b.contiguous().reshape(-1).view(torch.uint8).reshape(b.numel(), -1)
        diff = (ab != bb).any(dim=1)  # (numel,)
        if not bool(diff.any()):
            continue
        if a.is_floating_point():
            signed = diff & (a.reshape(-1) == 0) & (b.reshape(-1) == 0)
            if bool((diff == signed).all()):
                negzeros += int(signed.sum())
                continue
        mismatched.append(name)
    return VerifyReport(
        identical=not mismatched,
        mismatched=mismatched,
        negative_zeros=negzeros,
        tensors=len(source),
    )


def verify_packed(ckpt_dir: str | Path, file: str | Path) -> bool:
    """True iff the packed file reproduces the checkpoint's tensors bit for bit.

    Pruned zeros compare by value (``-0.0`` restored as ``+0.0``) unless the file was packed with
    ``signed_zeros=True``, in which case they too must match bit for bit.
    """
    report = compare_packed(ckpt_dir, file)
    header = read_header(Path(file))
    if header.get("signed_zeros"):
        return report.identical and report.negative_zeros == 0
    return report.identical
