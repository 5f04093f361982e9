"""atomic: the old file survives a failing writer, no temp file is left, success replaces."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustbench_sparse.atomic import atomic_path, atomic_write_bytes, atomic_write_text


def test_write_text_creates_parents_and_content(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.txt"
    atomic_write_text(target, "héllo\n")
    assert target.read_bytes() == "héllo\n".encode()
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]


def test_write_bytes_replaces_existing(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


class _Boom(Exception):
    pass


def test_old_file_survives_a_writer_that_raises(tmp_path: Path) -> None:
    target = tmp_path / "results.csv"
    target.write_text("old content")
    with pytest.raises(_Boom), atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        assert tmp.parent == target.parent and tmp != target
        raise _Boom
    assert target.read_text() == "old content"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_keyboard_interrupt_also_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("{")
        raise KeyboardInterrupt
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_writer_that_deletes_nothing_leaves_empty_file(tmp_path: Path) -> None:
    # The yielded temp path exists (mkstemp), so a writer that writes nothing gives an empty file.
    target = tmp_path / "empty"
    with atomic_path(target):
        pass
    assert target.read_bytes() == b""
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]
