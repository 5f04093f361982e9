"""rbs speed: one library call; a table or JSON with the environment beside every timing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from rbs.speed_cli import add_speed_parser
from robustbench_sparse.errors import UserError
from tests.test_export import _checkpoint


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rbs")
    add_speed_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.handler(args))


def test_speed_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    torch.set_num_threads(1)
    ckpt = _checkpoint(tmp_path, None)
    assert _run(["speed", str(ckpt), "--batch", "2", "--repeats", "1"]) == 0
    text = capsys.readouterr().out
    for needle in ("MACs per example", "masked", "thin", "csr", "skipped 2:4", "load"):
        assert needle in text
    assert _run(["speed", str(ckpt), "--batch", "1,2", "--repeats", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["batch"] for r in data["records"]} == {1, 2}
    assert data["environment"]["threads"] == 1 and data["input_shape"] == [1, 8, 8]
    with pytest.raises(UserError, match="repeats"):
        _run(["speed", str(ckpt), "--repeats", "0"])


def test_plain_state_dicts_are_refused_up_front(tmp_path: Path) -> None:
    """rbs speed / rbs export have no --dataset: a .pt gets their own advice, not the loader's."""
    import torch

    from rbs.commands.common import require_product_checkpoint

    for name in ("model.pt", "model.pth", "notes.txt"):
        path = tmp_path / name
        torch.save({"w": torch.zeros(1)}, path)
        with pytest.raises(UserError, match="rbs speed reads checkpoints written by rbs train"):
            _run(["speed", str(path), "--repeats", "1"])
        with pytest.raises(UserError, match="rbs export reads checkpoints"):
            require_product_checkpoint(path, "export")
    ckpt = _checkpoint(tmp_path, None)
    for ok in (ckpt, ckpt / "checkpoint.safetensors", tmp_path / "missing.pt"):
        require_product_checkpoint(ok, "speed")  # directories, their files; missing: the loader's
