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
