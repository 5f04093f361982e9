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


def test_export_thin_writes_a_loadable_thinner_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from robustbench_sparse.checkpoint import load_checkpoint
    from robustbench_sparse.sparsity import SparsityConfig, create_sparsifier

    source = _checkpoint(tmp_path, None)
    src = load_checkpoint(source)
    sp = create_sparsifier(SparsityConfig(target=0.75, granularity="nm", end=0.0), 1)
    sp.prepare(src.model)  # 2:4 plus half the filters removed, BatchNorm masked
    from robustbench_sparse.checkpoint import save_checkpoint

    meta = {k: v for k, v in src.meta.items() if k not in ("weights_sha256",)}
    meta["pruned_layers"] = sp.pruned_names
    save_checkpoint(source, src.model, meta, sp.masks)
    out = tmp_path / "thin"
    assert _run(["export", str(source), "--format", "thin", "--out", str(out)]) == 0
    assert "coupled groups" in capsys.readouterr().out
    thin = load_checkpoint(out)  # rebuilt from the recorded widths
    assert thin.name.endswith("-thin") and thin.meta["thin"]["widths"]
    assert thin.sparsity_report().method == "measured"
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(thin.model(x), src.model.eval()(x), atol=1e-5, rtol=1e-4)
    n_src = sum(p.numel() for p in src.model.parameters())
    assert sum(p.numel() for p in thin.model.parameters()) < 0.5 * n_src
    with pytest.raises(UserError, match="overwrite"):
        _run(["export", str(source), "--format", "thin", "--out", str(out)])
    with pytest.raises(UserError, match="already a thin"):
        _run(["export", str(out), "--format", "thin", "--out", str(tmp_path / "t2")])
    with pytest.raises(UserError, match="needs --out"):
        _run(["export", str(source), "--format", "thin"])
    assert _run(["export", str(source), "--format", "thin", "--out", str(out), "--overwrite"]) == 0
