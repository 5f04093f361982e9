"""packed_format: the packed file's bytes (magic, header, blobs) and their round trip."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

from robustbench_sparse.checkpoint_files import MASK_PREFIX
from robustbench_sparse.errors import UserError
from robustbench_sparse.packed_format import (
    FORMAT,
    MAGIC,
    VERSION,
    canonical_sha256,
    load_packed,
    pack_tensors,
    read_header,
    unpack,
)
from robustbench_sparse.sparsity import Granularity, compute_mask


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, 3, 3, generator=g)
    mask = compute_mask(w, 5 / 9, Granularity.WINDOW)  # 4 of 9 kept per kernel
    return {
        "conv.weight": w * mask,
        "conv.bias": torch.randn(4, generator=g),
        "steps": torch.tensor(7),
        MASK_PREFIX + "conv.weight": mask,
    }


def test_layout_header_and_round_trip(tmp_path: Path) -> None:
    tensors = _tensors()
    data, stats = pack_tensors(tensors, meta={"arch": "x"})
    assert data[:8] == MAGIC
    (hlen,) = struct.unpack("<Q", data[8:16])
    path = tmp_path / "m.rbsp"
    path.write_bytes(data)
    header = read_header(path)
    assert header["format"] == FORMAT and header["version"] == VERSION
    assert header["tensors_sha256"] == canonical_sha256(tensors) and header["meta"] == {"arch": "x"}
    assert len(data) > 16 + hlen
    [layer] = stats
    assert layer.name == "conv.weight" and layer.encoding == "window" and layer.kept == 4 * 3 * 4
    out = unpack(path)
    assert set(out) == set(tensors)
    for name, t in tensors.items():
        assert out[name].dtype == t.dtype and torch.equal(out[name], t), name
    meta, loaded = load_packed(path)
    assert meta == {"arch": "x"} and set(loaded) == set(tensors)


def test_canonical_hash_ignores_the_sign_of_zeros() -> None:
    a = {"w": torch.tensor([0.0, 1.0])}
    b = {"w": torch.tensor([-0.0, 1.0])}
    assert canonical_sha256(a) == canonical_sha256(b)
    assert canonical_sha256(a) != canonical_sha256({"w": torch.tensor([0.0, 2.0])})


def test_bad_magic_version_or_missing_meta_are_user_errors(tmp_path: Path) -> None:
    path = tmp_path / "m.rbsp"
    path.write_bytes(b"NOTPACK!" + bytes(8))
    with pytest.raises(UserError, match="bad magic"):
        read_header(path)
    data, _ = pack_tensors(_tensors())
    path.write_bytes(data)
    with pytest.raises(UserError, match="without the checkpoint's metadata"):
        load_packed(path)
    path.write_bytes(data.replace(b'"version":1', b'"version":9'))
    with pytest.raises(UserError, match="packed-format version 9"):
        read_header(path)


def test_position_code_bits_match_pack_tensors_for_each_encoding() -> None:
    import numpy as np

    from robustbench_sparse.packed_format import pack_tensors, position_code_bits

    rng = np.random.default_rng(0)
    window = np.zeros((4, 6, 3, 3), dtype=bool)
    window.reshape(24, 9)[:, :2] = True  # 2 of 9 in every kernel
    unbalanced = rng.random((4, 6, 3, 3)) < 0.4
    for name, mask in (("w", window), ("u", unbalanced)):
        weight = torch.from_numpy(np.where(mask, 1.0, 0.0).astype(np.float32))
        _, stats = pack_tensors({name: weight, f"__mask__.{name}": torch.from_numpy(mask)})
        enc, bits, bound = position_code_bits(mask)
        assert (enc, bits, bound) == (
            stats[0].encoding,
            stats[0].code_bits,
            stats[0].bound_code_bits,
        )
