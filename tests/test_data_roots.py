"""data_roots: the data root a checkpoint records, and the one its evaluation reads."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from evaluations.record.results import read_results
from rbs.cli import main
from robustbench_sparse.checkpoint import META_FILE
from robustbench_sparse.data_roots import choose_root, load_evaluation_split, recorded_data_root
from robustbench_sparse.errors import UserError
from tests.core_helpers import single_thread


def test_recorded_root_is_absolute_and_none_for_bundled_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert recorded_data_root("mnist", "rel/data") == str(tmp_path / "rel" / "data")
    monkeypatch.delenv("RBS_DATA_DIR", raising=False)
    assert recorded_data_root("cifar10", None) == str(tmp_path / "data")
    monkeypatch.setenv("RBS_DATA_DIR", str(tmp_path / "elsewhere"))
    assert recorded_data_root("imagefolder", None) == str(tmp_path / "elsewhere")
    assert recorded_data_root("digits", "anything") is None


def test_recorded_root_that_exists_is_used_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="robustbench_sparse.data_roots"):
        choice = choose_root("imagefolder", {"ck": str(tmp_path), "old": None}, None)
    assert choice.root == tmp_path and choice.gone is None
    assert f"recorded in checkpoint ck: {tmp_path}" in caplog.text
    assert "--data-root" in caplog.text


def test_explicit_root_wins(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    other = tmp_path / "copy"
    with caplog.at_level(logging.INFO, logger="robustbench_sparse.data_roots"):
        choice = choose_root("mnist", {"ck": str(tmp_path)}, other)
    assert choice.root == other
    assert f"reading --data-root {other} (checkpoint ck recorded {tmp_path})" in caplog.text


def test_nothing_recorded_keeps_the_default_root() -> None:
    assert choose_root("mnist", {"old": None}, None).root is None
    assert choose_root("digits", {"ck": "/nowhere"}, None).root is None


def test_gone_imagefolder_root_is_refused_naming_the_record_and_the_flag(tmp_path: Path) -> None:
    gone = str(tmp_path / "moved-away")
    with pytest.raises(UserError) as info:
        choose_root("imagefolder", {"ck": gone}, None)
    message = str(info.value)
    assert gone in message and "no longer exists" in message and "--data-root DIR" in message


def test_two_existing_roots_need_a_choice(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    with pytest.raises(UserError, match=r"different roots .*pass --data-root"):
        choose_root("imagefolder", {"x": str(a), "y": str(b)}, None)
    same = choose_root("imagefolder", {"x": str(a), "y": str(a)}, None)
    assert same.root == a


def test_gone_root_of_a_torchvision_dataset_falls_back_to_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RBS_DATA_DIR", str(tmp_path / "empty-default"))
    gone = str(tmp_path / "moved-away")
    with caplog.at_level(logging.WARNING):
        choice = choose_root("mnist", {"ck": gone}, None)
    assert choice.root is None and choice.gone == ("ck", gone)
    assert "no longer exists" in caplog.text
    with pytest.raises(UserError) as info:  # and the default root does not hold it either
        load_evaluation_split("mnist", {"ck": gone}, None)
    message = str(info.value)
    assert gone in message and str(tmp_path / "empty-default") in message
    assert "pass --data-root DIR" in message


def test_missing_data_without_a_record_keeps_the_loader_s_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RBS_DATA_DIR", str(tmp_path / "nothing"))
    with pytest.raises(UserError) as info:
        load_evaluation_split("imagefolder", {"old": None}, None)
    assert "--data-root" in str(info.value) and str(tmp_path / "nothing") in str(info.value)


def test_digits_reads_no_root() -> None:
    test = load_evaluation_split("digits", {"ck": None}, None, limit=20)
    assert len(test) == 20  # type: ignore[arg-type]


# ------------------------------------------------------------------- through rbs train / attack
def _folder(root: Path, n_test: int) -> Path:
    """A 2-class 8x8 imagefolder: 6 training and ``n_test`` test images per class."""
    from PIL import Image

    for split, n in (("train", 6), ("test", n_test)):
        for label, level in (("dark", 40), ("bright", 200)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (level, level + i, level)).save(folder / f"{i}.png")
    return root


@pytest.fixture
def folder_ckpt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """A checkpoint trained on an imagefolder given by a *relative* --data-root; (ckpt, root)."""
    root = _folder(tmp_path / "images", 3)
    monkeypatch.chdir(tmp_path)
    ck = tmp_path / "if-ck"
    argv = ["-q", "train", "--out", str(ck), "--dataset", "imagefolder", "--data-root", "images"]
    argv += ["--epochs", "1", "--batch-size", "4", "--set", "model.width=0.25"]
    with single_thread(), _restored_logging():
        assert main([*argv, "--device", "cpu", "--val-fraction", "0"]) == 0
    elsewhere = tmp_path / "elsewhere"  # attacks run from a folder without data/
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("RBS_DATA_DIR", raising=False)
    yield ck, root


@contextlib.contextmanager
def _restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    package = logging.getLogger("robustbench_sparse")
    package_level = package.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        package.setLevel(package_level)


def _attack(ck: Path, out: Path, *extra: str) -> int:
    argv = ["attack", "--checkpoint", str(ck), "--attack", "fgsm", "--eps", "0,0.1"]
    with single_thread(), _restored_logging():
        return main([*argv, "--no-report", "--out", str(out), *extra])


def _last_error(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines[-1].startswith("rbs attack: error: ") and "Traceback" not in "".join(lines)
    return lines[-1]


def test_training_records_the_absolute_root(folder_ckpt: tuple[Path, Path]) -> None:
    ck, root = folder_ckpt
    meta = json.loads((ck / META_FILE).read_text())
    assert meta["data_root"] == str(root.resolve())
    assert meta["data"]["data_root"] == "images"  # what was typed stays in the config record


def test_attack_reads_the_recorded_root_and_says_so(
    folder_ckpt: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck, root = folder_ckpt
    assert _attack(ck, tmp_path / "r") == 0
    err = capsys.readouterr().err
    assert f"reading the data root recorded in checkpoint if-ck: {root.resolve()}" in err
    assert (read_results(tmp_path / "r")["n"] == 6).all()


def test_explicit_data_root_wins(
    folder_ckpt: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck, root = folder_ckpt
    copy = _folder(tmp_path / "copy", 2)
    assert _attack(ck, tmp_path / "r", "--data-root", str(copy)) == 0
    assert f"reading --data-root {copy} (checkpoint if-ck recorded {root.resolve()})" in (
        capsys.readouterr().err
    )
    assert (read_results(tmp_path / "r")["n"] == 4).all()


def test_moved_root_names_the_record_and_the_flag(
    folder_ckpt: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck, root = folder_ckpt
    moved = root.rename(tmp_path / "moved")
    assert _attack(ck, tmp_path / "r") == 2
    message = _last_error(capsys)
    assert str(root.resolve()) in message and "no longer exists" in message
    assert "pass --data-root DIR" in message
    assert not (tmp_path / "r").exists()
    assert _attack(ck, tmp_path / "r", "--data-root", str(moved)) == 0
    assert (read_results(tmp_path / "r")["n"] == 6).all()


def test_checkpoint_without_the_record_reads_the_default_root(
    folder_ckpt: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck, root = folder_ckpt
    meta = json.loads((ck / META_FILE).read_text())
    del meta["data_root"]  # as written before roots were recorded
    (ck / META_FILE).write_text(json.dumps(meta))
    assert _attack(ck, tmp_path / "r") == 2
    message = _last_error(capsys)
    assert "data/val" in message and "--data-root DIR" in message
    assert _attack(ck, tmp_path / "r", "--data-root", str(root)) == 0
