"""``rbs prune``: rbs train (dense) -> rbs prune --method calibrated -> inspect / attack, and its
user errors (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from rbs.cli import main
from rbs.commands.prune import parse_options
from robustbench_sparse.errors import UserError
from tests.core_helpers import inspect_json, read_weights_file

FAST = ["--option", "iterations=2", "--option", "samples_per_iteration=100"]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prune") / "dense"
    argv = ["-q", "train", "--dataset", "digits", "--epochs", "3", "--batch-size", "32"]
    argv += ["--lr", "0.05", "--warmup-epochs", "0.5", "--train-limit", "300"]
    argv += ["--test-limit", "150", "--arch-kwargs", "width=0.25", "--device", "cpu"]
    argv += ["--no-amp", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    return out


def _prune(dense: Path, out: Path, *extra: str) -> int:
    argv = ["-q", "prune", str(dense), "--method", "calibrated", "--sparsity", "0.7"]
    return main([*argv, "--out", str(out), "--calibration", "60", *FAST, *extra])


@pytest.mark.slow
def test_train_prune_attack_end_to_end(dense: Path, tmp_path: Path) -> None:
    out = tmp_path / "cal"
    assert _prune(dense, out) == 0
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["method"] == "calibrated" and meta["kind"] == "post-training"
    assert meta["post_training"]["calibration"]["source"] == "train"
    assert meta["post_training"]["source"]["name"] == "dense"
    state, masks = read_weights_file(out)
    assert sorted(masks) == meta["pruned_layers"] and len(masks) == 4
    for name, mask in masks.items():
        assert bool((state[name][~mask] == 0).all())  # pruned weights exactly zero
    report = inspect_json(out)["sparsity_report"]
    assert isinstance(report, dict) and report["method"] == "calibrated"
    zero = report["numel_pruned"] - report["nnz_pruned"]
    assert zero == int(0.7 * report["numel_pruned"]) == sum(int((~m).sum()) for m in masks.values())
    results = tmp_path / "attack"
    argv = ["-q", "attack", "--checkpoint", str(out), "--attack", "pgd", "--eps", "0,0.1"]
    assert main([*argv, "--limit", "30", "--out", str(results), "--no-report"]) == 0
    rows = (results / "results.csv").read_text().splitlines()
    assert len(rows) > 1 and all(",calibrated," in row for row in rows[1:])


def test_fractal_calibration_and_a_structured_granularity(dense: Path, tmp_path: Path) -> None:
    out = tmp_path / "frac"
    assert _prune(dense, out, "--calibration-data", "fractal", "--granularity", "window") == 0
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["post_training"]["calibration"]["source"] == "fractal"
    assert meta["granularity"] == "calibrated-window"
    state, masks = read_weights_file(out)
    w = state["net.conv2.0.weight"]
    assert bool(((w != 0).reshape(-1, 9).sum(dim=1) <= 3).all())
    assert torch.equal(masks["net.conv2.0.weight"].reshape(-1, 9).sum(dim=1), torch.full((128,), 3))


def test_refusals_are_one_line_and_write_nothing(
    dense: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    cases = [
        ([], "already exists and is not empty; pass --overwrite"),
        (["--granularity", "filter"], "supports --granularity unstructured"),
        (["--option", "lr=0"], "lr must be a number > 0"),
        (["--option", "nope=1"], "unknown calibrated option 'nope'"),
        (["--calibration", "0"], "--calibration must be a positive"),
    ]
    for extra, message in cases:
        target = out if not extra else tmp_path / "fresh"
        assert _prune(dense, target, *extra) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "fresh").exists()
    assert (out / "keep.txt").read_text() == "mine"
    argv = ["prune", str(dense), "--method", "snip", "--sparsity", "0.5", "--out", str(out)]
    assert main(argv) == 2
    assert "unknown post-training method 'snip'; valid: calibrated" in capsys.readouterr().err


def test_overwrite_replaces_and_a_pruned_source_is_refused(
    dense: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cal"
    out.mkdir()
    (out / "old.txt").write_text("x")
    assert _prune(dense, out, "--overwrite", "--option", "tune=false") == 0
    assert not (out / "old.txt").exists() and (out / "checkpoint.json").is_file()
    assert _prune(out, tmp_path / "again") == 2
    assert "starts from a dense checkpoint" in capsys.readouterr().err
    assert _prune(dense, dense, "--overwrite") == 2
    assert "is the checkpoint being pruned" in capsys.readouterr().err


def test_parse_options() -> None:
    assert parse_options(["lr=1e-4", "tune=false", "iterations=3"]) == {
        "lr": 1e-4,
        "tune": False,
        "iterations": 3,
    }
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_options(["lr"])
    with pytest.raises(UserError, match="twice"):
        parse_options(["lr=1", "lr=2"])
