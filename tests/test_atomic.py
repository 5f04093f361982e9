"""atomic: the old file survives a failing writer, no temp file is left, success replaces."""

from __future__ import annotations

import os
import stat
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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_new_files_respect_the_umask_even_when_the_writer_makes_them_0600(tmp_path: Path) -> None:
    # safetensors' save_file replaces the path it is given with a 0600 file of its own
    def private_writer(path: Path) -> None:
        path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"weights")
        os.close(fd)

    target = tmp_path / "checkpoint.safetensors"
    with atomic_path(target) as tmp:
        private_writer(tmp)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()
    text = atomic_write_text(tmp_path / "checkpoint.json", "{}")
    assert stat.S_IMODE(text.stat().st_mode) == stat.S_IMODE(target.stat().st_mode)


def test_safetensors_checkpoint_has_the_same_mode_as_its_json(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    target = tmp_path / "w.safetensors"
    with atomic_path(target) as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp))
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()


def test_replacing_keeps_the_existing_mode(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write_text(target, "new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
