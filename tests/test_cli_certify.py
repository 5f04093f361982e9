"""Tests for ``rbs certify`` (rbs.commands.certify, rbs.certify_job) on small digits checkpoints.

The certified accuracy in ``certified.csv`` is recomputed from the per-example files (correct and
radius >= r; abstentions wrong), never above the clean accuracy of the same examples at r = 0;
``--json`` prints the contract's keys; user errors are one line and leave ``--out`` untouched.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from evaluations.record.certified import example_file, read_certified
from rbs.certify_job import certify_settings
from rbs.cli import main
from robustbench_sparse.errors import UserError
from tests.eval_helpers import build_checkpoints, single_thread
from tests.test_cli_train import assert_user_error


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def ckpt_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_checkpoints(tmp_path_factory.mktemp("ckpts"))


SMALL = ["--sigma", "0.25", "--n0", "20", "--n", "200", "--limit", "20", "--batch-size", "200"]


@pytest.fixture(scope="module")
def certified(
    ckpt_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("cert") / "out"
    argv = ["certify", *map(str, ckpt_dirs.values()), "--method", "smoothing", *SMALL]
    argv += ["--radii", "0,0.1,0.25", "--json", "--out", str(out)]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return out, buf.getvalue()


def test_certified_csv_matches_the_per_example_files(certified: tuple[Path, str]) -> None:
    out, _ = certified
    df = read_certified(out)
    assert df is not None and set(df["checkpoint"]) == {"dense", "window-70"}
    for name, sub in df.groupby("checkpoint"):
        ex = pd.read_csv(example_file(out, str(name), "smoothing"))
        assert len(ex) == 20 and (sub["n"] == 20).all()
        ok = (ex["prediction"] == ex["label"]) & (ex["prediction"] >= 0)
        for r, k in zip(sub["radius"], sub["certified_correct"], strict=True):
            assert k == int((ok & (ex["radius"] >= r)).sum())
        assert list(sub["certified_correct"]) == sorted(sub["certified_correct"], reverse=True)
        assert (sub["abstained"] == int((ex["prediction"] < 0).sum())).all()
        assert (sub["certified_accuracy_low"] <= sub["certified_accuracy"]).all()
        assert (sub["sigma"] == 0.25).all() and (sub["n_samples"] == 200).all()
    sidecar = json.loads((out / "certify.json").read_text())
    assert sidecar["settings"]["n"] == 200 and "seed_policy" in sidecar


def test_json_prints_the_contract_keys(certified: tuple[Path, str]) -> None:
    _, stdout = certified
    objs = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert len(objs) == 2
    for obj in objs:
        assert obj["method"] == "smoothing" and obj["norm"] == "l2"
        assert obj["radii"] == [0.0, 0.1, 0.25] and len(obj["certified_accuracy"]) == 3
        assert obj["n"] == 20 and 0 <= obj["abstained"] <= 20


@pytest.mark.parametrize(
    "extra,fragment",
    [
        (["--method", "smoothing"], "needs sigma > 0"),
        (["--method", "smoothing", "--sigma", "0.25", "--alpha", "0.7"], "alpha must be in"),
        (["--method", "smoothing", "--sigma", "0.25", "--n", "0"], "n must be >= 1"),
        (["--method", "smoothing", "--sigma", "0.25", "--radii", "0,-1"], "radii must be"),
        (["--method", "smoothing", "--sigma", "0.25", "--limit", "0"], "limit must be >= 1"),
    ],
)
def test_user_errors_are_one_line_and_write_nothing(
    extra: list[str],
    fragment: str,
    ckpt_dirs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    code = main(["certify", str(ckpt_dirs["dense"]), *extra, "--out", str(out)])
    assert fragment in assert_user_error(capsys, code, "certify")
    assert not out.exists()


def test_existing_out_is_refused_without_overwrite(
    certified: tuple[Path, str], ckpt_dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = certified
    before = (out / "certified.csv").read_bytes()
    argv = ["certify", str(ckpt_dirs["dense"]), "--method", "smoothing", *SMALL]
    code = main([*argv, "--out", str(out)])
    assert "--overwrite" in assert_user_error(capsys, code, "certify")
    assert (out / "certified.csv").read_bytes() == before


def test_certify_section_keys_are_checked() -> None:
    s = certify_settings({"method": "smoothing", "sigma": 0.5, "radii": [0, 0.5], "n": 100})
    assert s.sigma == 0.5 and s.radii == (0.0, 0.5) and s.n == 100
    with pytest.raises(UserError, match="unknown key 'sigmas'"):
        certify_settings({"sigmas": 0.5})


def test_ibp_dispatch_verified_at_eps_0_is_the_clean_accuracy(
    ckpt_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("evaluations.engine.certify_ibp", reason="helper B's IBP not present")
    out = tmp_path / "ibp"
    argv = ["certify", str(ckpt_dirs["dense"]), "--method", "ibp", "--eps", "0,0.01,0.1"]
    assert main([*argv, "--limit", "30", "--json", "--out", str(out)]) == 0
    obj = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert obj["method"] == "ibp" and obj["norm"] == "linf" and obj["epsilons"] == [0, 0.01, 0.1]
    ex = pd.read_csv(example_file(out, "dense", "ibp"))
    assert obj["certified_accuracy"][0] == pytest.approx((ex["prediction"] == ex["label"]).mean())
    acc = obj["certified_accuracy"]
    assert acc == sorted(acc, reverse=True) and obj["abstained"] == 0
