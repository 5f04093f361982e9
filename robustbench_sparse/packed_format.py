"""The packed file format: Campfire-sparse layers as nonzero values + per-group position codes.

A Campfire layer keeps the *same number* of weights in every group, so which positions a group
keeps is one of ``C(group, kept)`` combinations, and its index in that list costs
``ceil(log2 C(group, kept))`` bits. The packed file stores exactly that (fixed-width
combinatorial-number-system ranks, bit-packed) plus the kept values in their original dtype, bit
for bit. Dense tensors (and BatchNorm statistics, biases, first conv, classifier, ...) are stored
as raw bytes. Nothing is pickled; loading executes no code.

Layer encodings
---------------
A pruned weight ``W (K, C, kh, kw)`` (or Linear ``(K, C)``, read as ``(K, C, 1)``) with its mask is
seen as filters ``k`` -> kernels ``(k, c)`` -> positions. Two levels of codes, each present only if
it carries information:

* ``filter``: every filter keeps the same number ``n_c < C`` of non-empty kernels (``channel``,
  ``combined``; and the balanced per-row fallback of 1×1 convs / Linear, where a kernel is one
  weight). One rank of width ``ceil(log2 C(C, n_c))`` bits per filter.
* ``kernel``: every non-empty kernel keeps the same number ``n_w < kh·kw`` of positions
  (``window``, ``combined``). One rank of width ``ceil(log2 C(kh·kw, n_w))`` per non-empty kernel.

So ``window`` layers carry kernel codes only, ``channel`` layers filter codes only, ``combined``
both. A mask that is not balanced (``unstructured``, or a kept weight that is exactly zero does
not matter – the mask, not the zeros, is encoded) falls back to a one-bit-per-weight bitmask; a
layer whose weights are nonzero outside its mask is stored raw (with its mask as a bitmask).

Information bound: kept values (``dtype bits × kept``) + ``ceil(log2 C(group, kept))`` bits per
group at each level (for bitmask layers: ``ceil(log2 C(numel, nnz))``). The balanced encodings meet
it up to the byte padding of each blob; the file adds a JSON header.

Signed zeros: pruning by ``weight.mul_(mask)`` leaves ``-0.0`` at pruned positions of negative
weights. That sign bit carries no information (numerically ``-0.0 == 0.0``), and storing it would
cost one bit per pruned weight, more than the position codes. By default pruned positions are
restored as ``+0.0`` and :func:`~robustbench_sparse.export.compare_packed` reports how many
source zeros were ``-0.0``; ``signed_zeros=True`` stores a sign bitmap over the pruned positions
(only for layers that have any ``-0.0``) and then the round trip is bit-identical without
exception.

Binary layout (little endian)
-----------------------------
::

    offset 0   8 bytes   magic  b"RBSPACK1"
    offset 8   8 bytes   u64    H = header length in bytes
    offset 16  H bytes   UTF-8 JSON header (see below)
    16 + H     ...       blob area: the blobs, concatenated, each at the offset the header gives

Header: ``{"format": "robustbench-sparse-packed", "version": 1, "source_sha256": ...,
"signed_zeros": bool, "tensors_sha256": ..., "meta": {...}, "tensors": [entry, ...]}``;
``tensors_sha256`` fingerprints the decoded tensors (:func:`canonical_sha256`); ``meta`` is the source checkpoint's
``checkpoint.json`` (so a packed file loads on its own wherever a checkpoint loads, see
:func:`load_packed`; files exported before it was added lack it); every entry has ``name``, ``dtype`` (torch dtype
name without ``torch.``), ``shape`` and ``enc``:

* ``"raw"``: ``data`` = ``[offset, length]`` of the tensor's bytes (C order, little endian);
* ``"campfire"``: ``mask`` (name of the mask tensor recreated from the codes, or null),
  ``n_c`` / ``n_w`` (kept per group; null = level absent), ``values`` = blob of the kept values in
  C order of the weight, ``filter_codes`` / ``kernel_codes`` = blobs of bit-packed ranks
  (``ceil(log2 C(n, k))`` bits each, least significant bit first, groups in C order; kernel ranks
  only for non-empty kernels), optional ``negzero`` = bitmap over pruned positions;
* ``"bitmask"``: ``mask`` as above, ``bits`` = blob of ``numel`` bits (LSB first), ``values`` as
  above, optional ``negzero``.

Mask tensors (``__mask__.<name>``) of encoded layers are not stored: they are recreated from the
codes. Ranks use the colex combinatorial number system: a sorted combination
``c_1 < ... < c_k`` has rank ``sum_i C(c_i, i)`` (1-based ``i``).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robustbench_sparse.checkpoint_files import FORMAT as CHECKPOINT_FORMAT
from robustbench_sparse.checkpoint_files import MASK_PREFIX
from robustbench_sparse.errors import UserError
from robustbench_sparse.packed_codes import code_bits, decode_groups, encode_groups

__all__ = [
    "FORMAT",
    "MAGIC",
    "VERSION",
    "LayerStats",
    "canonical_sha256",
    "load_packed",
    "pack_tensors",
    "position_code_bits",
    "read_header",
    "unpack",
]

MAGIC = b"RBSPACK1"
FORMAT = "robustbench-sparse-packed"
VERSION = 1
_MAX_HEADER = 64 * 1024 * 1024


@dataclass(frozen=True)
class LayerStats:
    """Size accounting of one encoded (sparse) layer, in bits."""

    name: str
    encoding: str  # "window" / "channel" / "combined" / "balanced" / "bitmask" / "raw"
    numel: int
    kept: int
    value_bits: int
    code_bits: int  # position codes as stored (before byte padding)
    bound_code_bits: int  # sum over groups of ceil(log2 C(group, kept))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _parse_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise UserError(f"packed file is corrupt: unknown dtype {name!r}")
    return dtype


def _tensor_bytes(t: Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def _bytes_tensor(data: bytes, dtype: torch.dtype, shape: list[int]) -> Tensor:
    if math.prod(shape) == 0:
        return torch.empty(shape, dtype=dtype)
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return buf.view(dtype).reshape(shape).clone()


def _levels(mask3: np.ndarray) -> tuple[int | None, int | None] | None:
    """(n_c, n_w) if the mask (K, C, S) is balanced at both levels; None = level absent."""
    kernels = mask3.any(axis=2)  # (K, C)
    per_filter = kernels.sum(axis=1)  # (K,)
    per_kernel = mask3.sum(axis=2)[kernels]  # (alive kernels,)
    if per_filter.size == 0 or not (per_filter == per_filter[0]).all():
        return None
    if per_kernel.size and not (per_kernel == per_kernel[0]).all():
        return None
    n_c, channels, window = int(per_filter[0]), mask3.shape[1], mask3.shape[2]
    n_w = int(per_kernel[0]) if per_kernel.size else window
    return (n_c if n_c < channels else None), (n_w if n_w < window else None)


def position_code_bits(mask: np.ndarray) -> tuple[str, int, int]:
    """How the packed export encodes the positions of a bool mask of a Conv2d / Linear weight.

    ``mask``: bool ``(K, C, kh, kw)`` or ``(K, C)``. Returns ``(encoding, code_bits,
    bound_code_bits)`` exactly as :func:`pack_tensors` reports them in :class:`LayerStats` for a
    layer stored with this mask: ``window`` / ``channel`` / ``combined`` / ``balanced`` rank codes
    (stored bits = bound), or the ``bitmask`` fallback (``numel`` bits; bound
    ``ceil(log2 C(numel, kept))``).
    """
    m = np.asarray(mask, dtype=bool)
    k3, c3, s3 = _as3(tuple(m.shape))
    levels = _levels(m.reshape(k3, c3, s3)) if m.ndim in (2, 4) else None
    if levels is None:
        return "bitmask", m.size, code_bits(m.size, int(m.sum()))
    n_c, n_w = levels
    mask3 = m.reshape(k3, c3, s3)  # (K, C, kh*kw)
    bits = 0 if n_c is None else k3 * code_bits(c3, n_c)
    if n_w is not None:
        bits += int(mask3.any(axis=2).sum()) * code_bits(s3, n_w)
    return _encoding_name(n_c, n_w, s3), bits, bits


def _as3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 2:
        return shape[0], shape[1], 1
    return shape[0], shape[1], math.prod(shape[2:])


class _Writer:
    def __init__(self) -> None:
        self.blobs: list[bytes] = []
        self.offset = 0

    def add(self, data: bytes) -> list[int]:
        ref = [self.offset, len(data)]
        self.blobs.append(data)
        self.offset += len(data)
        return ref


def _encoding_name(n_c: int | None, n_w: int | None, window: int) -> str:
    if window == 1:
        return "balanced"
    if n_c is not None and n_w is not None:
        return "combined"
    return "channel" if n_c is not None else "window"


def _encode_sparse(
    name: str, weight: Tensor, mask: Tensor, mask_name: str | None, w: _Writer, signed: bool
) -> tuple[dict[str, Any], LayerStats]:
    m = mask.detach().to("cpu", torch.bool).numpy()
    wt = weight.detach().to("cpu").contiguous()
    flat_bits = wt.reshape(-1).view(_uint_of(wt.dtype)).numpy()
    kept = int(m.sum())
    value_bits = kept * wt.element_size() * 8
    values = flat_bits[m.reshape(-1)].tobytes()
    entry: dict[str, Any] = {
        "name": name,
        "dtype": _dtype_name(wt.dtype),
        "shape": list(wt.shape),
        "mask": mask_name,
    }
    pruned_bits = flat_bits[~m.reshape(-1)]
    if signed and pruned_bits.size and bool((pruned_bits != 0).any()):
        sign = pruned_bits != 0  # only +0.0 / -0.0 are possible here (checked by the caller)
        entry["negzero"] = w.add(np.packbits(sign, bitorder="little").tobytes())
    levels = None
    if wt.ndim in (2, 4):
        k3, c3, s3 = _as3(tuple(wt.shape))
        mask3 = m.reshape(k3, c3, s3)  # (K, C, kh*kw); Linear: (K, C, 1)
        levels = _levels(mask3)
    if levels is None:
        entry["enc"] = "bitmask"
        entry["bits"] = w.add(np.packbits(m.reshape(-1), bitorder="little").tobytes())
        entry["values"] = w.add(values)
        bound = code_bits(m.size, kept)
        stats = LayerStats(name, "bitmask", m.size, kept, value_bits, m.size, bound)
        return entry, stats
    n_c, n_w = levels
    entry.update(enc="campfire", n_c=n_c, n_w=n_w)
    bits = bound = 0
    if n_c is not None:
        kernels = np.asarray(mask3.any(axis=2))  # (K, C): groups of C kernels
        data, nbits = encode_groups(kernels, n_c)
        entry["filter_codes"] = w.add(data)
        bits += nbits
        bound += k3 * code_bits(c3, n_c)
    if n_w is not None:
        alive = mask3[mask3.any(axis=2)]  # (alive kernels, S)
        data, nbits = encode_groups(alive, n_w)
        entry["kernel_codes"] = w.add(data)
        bits += nbits
        bound += alive.shape[0] * code_bits(s3, n_w)
    entry["values"] = w.add(values)
    enc = _encoding_name(n_c, n_w, s3)
    return entry, LayerStats(name, enc, m.size, kept, value_bits, bits, bound)


def _uint_of(dtype: torch.dtype) -> torch.dtype:
    size = torch.empty(0, dtype=dtype).element_size()
    return {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[size]


def pack_tensors(
    tensors: dict[str, Tensor],
    *,
    source_sha256: str | None = None,
    signed_zeros: bool = False,
    meta: dict[str, Any] | None = None,
) -> tuple[bytes, list[LayerStats]]:
    """Encode a checkpoint's tensors (weights + ``__mask__.`` masks) -> (file bytes, layer stats).

    ``meta`` (the checkpoint's metadata) is stored in the header when given.
    """
    masks = {k[len(MASK_PREFIX) :]: v for k, v in tensors.items() if k.startswith(MASK_PREFIX)}
    writer = _Writer()
    entries: list[dict[str, Any]] = []
    stats: list[LayerStats] = []
    implied: set[str] = set()
    for name, tensor in tensors.items():
        if name.startswith(MASK_PREFIX):
            continue
        mask = masks.get(name)
        usable = (
            mask is not None
            and tensor.is_floating_point()
            and tuple(mask.shape) == tuple(tensor.shape)
            and tensor.numel() > 0
            and not bool((tensor.detach().cpu()[~mask.detach().cpu().bool()] != 0).any())
        )
        if usable:
            assert mask is not None
            entry, st = _encode_sparse(name, tensor, mask, MASK_PREFIX + name, writer, signed_zeros)
            entries.append(entry)
            stats.append(st)
            implied.add(MASK_PREFIX + name)
            continue
        entries.append(
            {
                "name": name,
                "dtype": _dtype_name(tensor.dtype),
                "shape": list(tensor.shape),
                "enc": "raw",
                "data": writer.add(_tensor_bytes(tensor)),
            }
        )
    for name, mask in tensors.items():  # masks not implied by a code (e.g. raw fallback)
        if name.startswith(MASK_PREFIX) and name not in implied:
            entries.append(
                {
                    "name": name,
                    "dtype": _dtype_name(mask.dtype),
                    "shape": list(mask.shape),
                    "enc": "raw",
                    "data": writer.add(_tensor_bytes(mask)),
                }
            )
    header = {
        "format": FORMAT,
        "version": VERSION,
        "source_sha256": source_sha256,
        "signed_zeros": signed_zeros,
        "tensors_sha256": canonical_sha256(tensors),
        **({"meta": meta} if meta is not None else {}),
        "tensors": entries,
    }
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return MAGIC + struct.pack("<Q", len(head)) + head + b"".join(writer.blobs), stats


def _read(path: Path) -> tuple[dict[str, Any], memoryview]:
    if not path.is_file():
        raise UserError(f"packed file {path} does not exist")
    raw = path.read_bytes()
    if len(raw) < 16 or raw[:8] != MAGIC:
        raise UserError(f"{path} is not a robustbench-sparse packed file (bad magic)")
    (hlen,) = struct.unpack("<Q", raw[8:16])
    if hlen > _MAX_HEADER or 16 + hlen > len(raw):
        raise UserError(f"{path} is corrupt or truncated (header length {hlen})")
    try:
        header = json.loads(raw[16 : 16 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{path} is corrupt: unreadable header") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise UserError(f"{path} is not a robustbench-sparse packed file")
    if header.get("version") != VERSION:
        raise UserError(f"{path} has packed-format version {header.get('version')}; expected 1")
    return header, memoryview(raw)[16 + hlen :]


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of packed file ``path`` (magic, length and version checked)."""
    header, _ = _read(path)
    return header


def _blob(area: memoryview, ref: Any, path: Path) -> bytes:
    if not (isinstance(ref, list) and len(ref) == 2 and all(isinstance(v, int) for v in ref)):
        raise UserError(f"{path} is corrupt: bad blob reference {ref!r}")
    off, length = ref
    if off < 0 or length < 0 or off + length > len(area):
        raise UserError(f"{path} is corrupt or truncated: a blob lies outside the file")
    return bytes(area[off : off + length])


def unpack(file: str | Path) -> dict[str, Tensor]:
    """Decode a packed file into the checkpoint's tensors (weights and ``__mask__.`` masks)."""
    path = Path(file)
    header, area = _read(path)
    out: dict[str, Tensor] = {}
    try:
        for e in header["tensors"]:
            dtype, shape = _parse_dtype(e["dtype"]), [int(s) for s in e["shape"]]
            if e["enc"] == "raw":
                data = _blob(area, e["data"], path)
                if len(data) != math.prod(shape) * torch.empty(0, dtype=dtype).element_size():
                    raise UserError(f"{path} is corrupt: tensor {e['name']!r} has the wrong size")
                out[e["name"]] = _bytes_tensor(data, dtype, shape)
                continue
            numel = math.prod(shape)
            if e["enc"] == "bitmask":
                bits = np.unpackbits(
                    np.frombuffer(_blob(area, e["bits"], path), dtype=np.uint8), bitorder="little"
                )
                if bits.size < numel:
                    raise UserError(f"{path} is corrupt: mask of {e['name']!r} is too short")
                m = bits[:numel].astype(bool)
            elif e["enc"] == "campfire":
                k3, c3, s3 = _as3(tuple(shape))
                n_c, n_w = e.get("n_c"), e.get("n_w")
                if n_c is None:
                    kernels = np.ones((k3, c3), dtype=bool)
                else:
                    codes = _blob(area, e["filter_codes"], path)
                    kernels = decode_groups(codes, k3, c3, int(n_c))  # (K, C)
                mask3 = np.zeros((k3, c3, s3), dtype=bool)
                alive = int(kernels.sum())
                if n_w is None:
                    mask3[kernels] = True
                else:
                    codes = _blob(area, e["kernel_codes"], path)
                    mask3[kernels] = decode_groups(codes, alive, s3, int(n_w))
                m = mask3.reshape(-1)
            else:
                raise UserError(f"{path} is corrupt: unknown encoding {e['enc']!r}")
            uint = _uint_of(dtype)
            width = torch.empty(0, dtype=dtype).element_size()
            values = _blob(area, e["values"], path)
            if len(values) != int(m.sum()) * width:
                raise UserError(f"{path} is corrupt: values of {e['name']!r} have the wrong size")
            flat = torch.zeros(numel, dtype=uint)
            idx = torch.from_numpy(np.flatnonzero(m))
            if idx.numel():
                flat[idx] = torch.frombuffer(bytearray(values), dtype=uint)
            if "negzero" in e:
                neg = np.unpackbits(
                    np.frombuffer(_blob(area, e["negzero"], path), dtype=np.uint8),
                    bitorder="little",
                )[: numel - int(m.sum())].astype(bool)
                pruned = torch.from_numpy(np.flatnonzero(~m)[neg])
                flat[pruned] = torch.tensor(-0.0, dtype=dtype).view(uint)
            out[e["name"]] = flat.view(dtype).reshape(shape)
            if e.get("mask"):
                out[str(e["mask"])] = torch.from_numpy(m.copy()).reshape(shape)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, UserError):
            raise
        raise UserError(f"{path} is corrupt: malformed header entry ({exc})") from None
    return out


def canonical_sha256(tensors: dict[str, Tensor]) -> str:
    """SHA-256 of the tensors serialized as ``checkpoint.safetensors`` is, with ``-0.0`` as ``+0.0``.

    The fingerprint a packed file must reproduce whether or not it stores zero signs.
    """
    from safetensors.torch import save as safetensors_bytes

    canon = {  # -0.0 + 0.0 == +0.0; copies, so no two entries share memory
        k: (v + 0.0 if v.is_floating_point() else v.clone()).contiguous()
        for k, v in tensors.items()
    }
    blob = safetensors_bytes(canon, metadata={"format": CHECKPOINT_FORMAT})
    return hashlib.sha256(blob).hexdigest()


def load_packed(file: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A packed file's checkpoint metadata and tensors, as :func:`load_checkpoint` needs them.

    The decoded tensors must hash (:func:`canonical_sha256`) to the header's ``tensors_sha256``:
    the model is bit for bit the exported one, up to the sign of pruned zeros when the file was
    packed without ``signed_zeros`` (numerically the same model).

    Raises:
        UserError: not a packed file, corrupt, exported without metadata, or not reproducing its
            source.
    """
    path = Path(file)
    header, _ = _read(path)
    meta = header.get("meta")
    if not isinstance(meta, dict):
        raise UserError(
            f"{path} was packed without the checkpoint's metadata (an older export); re-export "
            "it with `rbs export CKPT_DIR --format packed`"
        )
    tensors = unpack(path)
    expected = header.get("tensors_sha256")
    if not isinstance(expected, str) or canonical_sha256(tensors) != expected:
        raise UserError(
            f"{path} does not reproduce the checkpoint it was exported from (checksum differs): "
            "the file is corrupt or was edited; re-export it"
        )
    return dict(meta), tensors
