"""Untrusted checkpoints through the CLI: pickled code never runs, absurd headers are refused.

The library-level checks live in ``test_checkpoint.py``; these go through ``rbs`` (in-process and
once as a real subprocess) and also assert that a refused command leaves no output behind.
"""

from __future__ import annotations

import builtins
import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from rbs.cli import main
from robustbench_sparse.checkpoint import META_FILE, WEIGHTS_FILE, save_checkpoint
from robustbench_sparse.datasets import dataset_info
from robustbench_sparse.models import create_model
from tests.core_helpers import WIDTH, single_thread

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


class Payload:
    """Unpickling this creates ``target`` (stands for arbitrary code execution)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.open, (str(self.target), "w"))


def _plant_evil_pt(path: Path, marker: Path) -> Path:
    info = dataset_info("digits")
    model = create_model("small_cnn", num_classes=10, in_channels=1, mean=info.mean, std=info.std)
    torch.save({"state_dict": model.state_dict(), "extra": Payload(marker)}, path)
    assert not marker.exists()
    return path


def _last_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and not any("Traceback" in line for line in lines), err
    return lines[-1]


def test_rbs_attack_refuses_a_pickle_payload_and_never_runs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    evil = _plant_evil_pt(tmp_path / "evil.pt", marker)
    out = tmp_path / "results"
    argv = ["attack", "--checkpoint", str(evil), "--arch", "small_cnn", "--dataset", "digits"]
    assert main([*argv, "--out", str(out)]) == 2
    line = _last_line(capsys.readouterr().err)
    assert line.startswith(f"rbs attack: error: refusing to load {evil}: it holds pickled")
    assert "convert it to safetensors" in line
    assert not marker.exists()
    assert not out.exists()


def test_payload_never_runs_in_a_real_rbs_process(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = _plant_evil_pt(tmp_path / "evil.pth", marker)
    argv = ["attack", "--checkpoint", str(evil), "--arch", "small_cnn", "--dataset", "digits"]
    proc = subprocess.run(
        [sys.executable, "-m", "rbs", *argv, "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "refusing to load" in _last_line(proc.stderr)
    assert not marker.exists()
    assert not (tmp_path / "r").exists()


def test_rbs_train_resume_refuses_a_planted_train_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"model": Payload(marker)}, out / "train_state.pt")
    before = (out / "train_state.pt").read_bytes()
    argv = ["train", "--out", str(out), "--resume", "--epochs", "1", "--train-limit", "50"]
    assert main([*argv, "--arch", "small_cnn", "--device", "cpu"]) == 2
    assert _last_line(capsys.readouterr().err).startswith(
        f"rbs train: error: cannot resume: {out / 'train_state.pt'} is unreadable"
    )
    assert not marker.exists()
    assert (out / "train_state.pt").read_bytes() == before


def _checkpoint_dir(tmp_path: Path) -> Path:
    info = dataset_info("digits")
    torch.manual_seed(0)
    model = create_model(
        "small_cnn", num_classes=10, in_channels=1, mean=info.mean, std=info.std, width=WIDTH
    )
    meta = {
        "name": "ck",
        "arch": "small_cnn",
        "arch_kwargs": {"width": WIDTH},
        "dataset": "digits",
        "num_classes": 10,
        "in_channels": 1,
        "normalization": {"mean": list(info.mean), "std": list(info.std)},
    }
    return save_checkpoint(tmp_path / "ck", model, meta)


def _replace_weights(ckpt: Path, data: bytes) -> None:
    """Swap in hostile weights and re-sign them, so only the content checks can catch them."""
    import hashlib

    (ckpt / WEIGHTS_FILE).write_bytes(data)
    meta = json.loads((ckpt / META_FILE).read_text())
    meta["weights_sha256"] = hashlib.sha256(data).hexdigest()
    (ckpt / META_FILE).write_text(json.dumps(meta))


def _header(entries: dict[str, Any], header_len: int | None = None, data: bytes = b"") -> bytes:
    raw = json.dumps(entries).encode()
    return struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        # A header length of 2**62 bytes: refused before anything is allocated.
        (_header({}, header_len=2**62), "safetensors header claims 4611686018427387904 bytes"),
        # A tensor whose offsets point a terabyte past the end of the file.
        (
            _header({"w": {"dtype": "F32", "shape": [2**38], "data_offsets": [0, 2**40]}}),
            "tensor 'w' lies outside the file",
        ),
        # Offsets that fit but a shape claiming 2**40 elements: safetensors refuses it.
        (
            _header(
                {"w": {"dtype": "F32", "shape": [2**40], "data_offsets": [0, 4]}}, data=b"\0" * 4
            ),
            "is not a readable safetensors file",
        ),
        # A pickle renamed to .safetensors is not a safetensors file.
        (b"\x80\x04\x95" + b"\0" * 64, "is corrupt"),
    ],
    ids=["header-length", "offsets", "shape", "pickle-renamed"],
)
def test_hostile_safetensors_headers_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], payload: bytes, fragment: str
) -> None:
    ckpt = _checkpoint_dir(tmp_path)
    _replace_weights(ckpt, payload)
    assert main(["inspect", str(ckpt)]) == 2
    line = _last_line(capsys.readouterr().err)
    assert line.startswith("rbs inspect: error: ") and fragment in line, line
