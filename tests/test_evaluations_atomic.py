"""Tests for robustbench_sparse.atomic: a failed write never damages the existing file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from robustbench_sparse.atomic import atomic_path, atomic_write_bytes, atomic_write_text


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_write_text_and_bytes(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    assert atomic_write_text(target, "héllo\n") == target
    assert target.read_text(encoding="utf-8") == "héllo\n"
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert _names(target.parent) == ["a.txt"]


def test_atomic_path_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "fig.png"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        assert tmp.suffix == ".png"  # writers that infer the format from the suffix still work
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the context exits
    assert target.read_text() == "new"
    assert _names(tmp_path) == ["fig.png"]


def test_old_file_survives_a_failing_writer(tmp_path: Path) -> None:
    target = tmp_path / "results.csv"
    target.write_text("old contents")

    class WriterError(RuntimeError):
        pass

    with pytest.raises(WriterError), atomic_path(target) as tmp:
        tmp.write_text("half written")
        raise WriterError("disk full")
    assert target.read_text() == "old contents"
    assert _names(tmp_path) == ["results.csv"]  # temp file removed


def test_missing_output_is_an_error(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    with pytest.raises(FileNotFoundError), atomic_path(target) as tmp:
        tmp.unlink()
    assert not target.exists()
    assert _names(tmp_path) == []


def test_permissions_follow_umask_not_mkstemp(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0o022)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
