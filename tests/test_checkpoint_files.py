"""checkpoint_files: byte-level checks and safe readers shared by checkpoint and export."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
import torch

from robustbench_sparse.checkpoint_files import (
    FORMAT,
    META_FILE,
    WEIGHTS_FILE,
    check_finite,
    load_plain_state_dict,
    load_safetensors,
    read_meta,
    resolve_checkpoint_files,
    sha256_file,
)
from robustbench_sparse.errors import UserError


def test_absurd_header_size_is_refused_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 62) + b"{}" * 8)
    with pytest.raises(UserError, match="header claims"):
        load_safetensors(path)


def test_unreadable_header_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 6) + b"\xff{[}]x")
    with pytest.raises(UserError, match="unreadable safetensors header"):
        load_safetensors(path)
    path.write_bytes(struct.pack("<Q", 2) + b"[]")
    with pytest.raises(UserError, match="not a mapping"):
        load_safetensors(path)


def test_sha256_file_is_the_digest_of_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000  # more than one 1 MiB chunk
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_resolve_checkpoint_files_maps_every_spelling(tmp_path: Path) -> None:
    assert resolve_checkpoint_files(tmp_path) == (tmp_path / WEIGHTS_FILE, tmp_path / META_FILE)
    w = tmp_path / "m.safetensors"
    assert resolve_checkpoint_files(w) == (w, tmp_path / "m.json")
    assert resolve_checkpoint_files(tmp_path / "m.json") == (w, tmp_path / "m.json")
    with pytest.raises(UserError, match="does not exist"):
        resolve_checkpoint_files(tmp_path / "missing.bin")
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(UserError, match="cannot tell what"):
        resolve_checkpoint_files(other)


def test_read_meta_needs_this_format_and_the_core_fields(tmp_path: Path) -> None:
    path = tmp_path / META_FILE
    with pytest.raises(UserError, match="is missing"):
        read_meta(path)
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(UserError, match="not a robustbench-sparse checkpoint"):
        read_meta(path)
    meta = {"format": FORMAT, "arch": "small_cnn", "num_classes": 10, "in_channels": 1}
    path.write_text(json.dumps(meta))
    with pytest.raises(UserError, match="lacks the field 'dataset'"):
        read_meta(path)
    path.write_text(json.dumps({**meta, "dataset": "digits"}))
    assert read_meta(path)["dataset"] == "digits"


def test_check_finite_refuses_nan_and_inf_in_float_tensors(tmp_path: Path) -> None:
    check_finite({"w": torch.ones(3), "n": torch.tensor([1, 2])}, tmp_path)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(UserError, match="NaN or Inf"):
            check_finite({"w": torch.tensor([0.0, bad])}, tmp_path)


def test_plain_state_dicts_load_without_code_and_lose_wrapper_prefixes(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {"module.fc.weight": torch.ones(2, 2)}}, path)
    state, key = load_plain_state_dict(path)
    assert list(state) == ["fc.weight"] and torch.equal(state["fc.weight"], torch.ones(2, 2))
    assert key == "state_dict"
    torch.save({"net": {"fc.weight": torch.ones(1)}, "acc": 95.1, "epoch": 200}, path)  # kuangliu
    assert load_plain_state_dict(path)[1] == "net"
    torch.save({"ema": {"fc.weight": torch.ones(1)}, "model": {"fc.weight": torch.zeros(1)}}, path)
    with pytest.raises(UserError, match=r"holds 2 state dicts \('ema', 'model'\)"):
        load_plain_state_dict(path)
    state, key = load_plain_state_dict(path, "model")
    assert key == "model" and float(state["fc.weight"]) == 0.0
    torch.save({"fc.weight": torch.ones(1), "note": Path("x")}, path)  # a pickled object
    with pytest.raises(UserError, match="refusing to load"):
        load_plain_state_dict(path)
    torch.save({"epochs": 3}, path)
    with pytest.raises(UserError, match="does not contain a state dict of tensors"):
        load_plain_state_dict(path)


def test_load_safetensors_of_a_missing_or_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    with pytest.raises(UserError, match="do not exist"):
        load_safetensors(path)
    path.write_bytes(b"\x01\x02")
    with pytest.raises(UserError, match="truncated"):
        load_safetensors(path)
    path.write_bytes(struct.pack("<Q", 2) + b"{}")
    assert load_safetensors(path) == {}
