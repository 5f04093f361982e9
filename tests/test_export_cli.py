"""rbs export: flags map to one library call; sizes printed; user errors are UserError."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from rbs.export_cli import add_export_parser
from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity import Granularity
from tests.test_export import _checkpoint


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rbs")
    add_export_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.handler(args))


def test_export_then_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _checkpoint(tmp_path, Granularity.WINDOW)
    out = tmp_path / "m.rbsp"
    assert _run(["export", str(ckpt), "--format", "packed", "--out", str(out), "--verify"]) == 0
    text = capsys.readouterr().out
    for needle in (
        "packed:",
        "dense safetensors:",
        "information bound:",
        "packed / bound",
        "bit-identical",
    ):
        assert needle in text
    assert _run(["export", str(ckpt), "--verify", str(out)]) == 0
    assert "bit-identical" in capsys.readouterr().out
    assert (
        _run(
            ["export", str(ckpt), "--format", "packed", "--out", str(out), "--overwrite", "--json"]
        )
        == 0
    )
    assert '"ratio_to_bound"' in capsys.readouterr().out


def test_verify_detects_a_different_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _checkpoint(tmp_path, Granularity.WINDOW)
    b = _checkpoint(tmp_path, Granularity.CHANNEL)
    out = tmp_path / "a.rbsp"
    assert _run(["export", str(a), "--format", "packed", "--out", str(out)]) == 0
    assert _run(["export", str(b), "--verify", str(out)]) == 1
    assert "FAILED" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--out", "x.rbsp"],
        ["--format", "packed"],
        ["--verify"],
        ["--format", "packed", "--out", "x.rbsp", "--verify", "y.rbsp"],
    ],
)
def test_user_errors(tmp_path: Path, extra: list[str]) -> None:
    ckpt = _checkpoint(tmp_path, Granularity.WINDOW)
    with pytest.raises(UserError):
        _run(
            ["export", str(ckpt), *[str(tmp_path / e) if e.endswith(".rbsp") else e for e in extra]]
        )


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, Granularity.WINDOW)
    out = tmp_path / "m.rbsp"
    out.write_bytes(b"keep me")
    with pytest.raises(UserError, match="--overwrite"):
        _run(["export", str(ckpt), "--format", "packed", "--out", str(out)])
    assert out.read_bytes() == b"keep me"


def test_rbs_inspect_and_attack_read_a_packed_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rbs.cli import main

    ckpt = _checkpoint(tmp_path, Granularity.WINDOW, 0.7)
    packed = tmp_path / "model.rbsp"
    assert main(["export", str(ckpt), "--format", "packed", "--out", str(packed)]) == 0
    assert main(["inspect", str(packed), "--json"]) == 0
    assert '"granularity"' in capsys.readouterr().out
    out = tmp_path / "res"
    argv = ["attack", "--checkpoint", str(packed), "--attack", "fgsm", "--eps", "0,0.1"]
    assert main([*argv, "--limit", "20", "--no-report", "--out", str(out)]) == 0
    assert (out / "results.csv").is_file()
