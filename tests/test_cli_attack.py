"""Tests for the ``rbs attack``, ``rbs plot`` and ``rbs report`` subcommands.

The CLI is driven through :func:`rbs.cli.main` with an explicit argv; user errors must
exit with status 2 and one line on stderr, and leave existing results untouched.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from pandas.testing import assert_frame_equal

from evaluations.record.costs import read_costs
from evaluations.record.metrics import WORST_CASE
from evaluations.record.results import read_results, read_sidecar
from rbs.cli import main
from robustbench_sparse.datasets import dataset_info
from robustbench_sparse.models import create_model_for
from tests.eval_helpers import build_checkpoints, single_thread, without_timing

EPS = "0,2/255,8/255"
EPS_VALUES = [0.0, 2 / 255, 8 / 255]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def ckpt_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_checkpoints(tmp_path_factory.mktemp("ckpts"))


def _argv(ckpt_dirs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    argv = ["attack"]
    for path in ckpt_dirs.values():
        argv += ["--checkpoint", str(path)]
    return [*argv, *extra, "--out", str(out)]


def _main_argv(ckpt_dirs: dict[str, Path], out: Path) -> list[str]:
    return _argv(
        ckpt_dirs,
        out,
        "--attack",
        "fgsm",
        "--attack",
        "pgd",
        "--attack",
        "cw",
        "--eps",
        EPS,
        "--eps-l2",
        "0,0.5,1",
        "--param",
        "pgd.steps=3",
        "--param",
        "cw.steps=20",
        "--param",
        "cw.binary_search_steps=3",
        "--limit",
        "40",
        "--batch-size",
        "20",
    )


@pytest.fixture(scope="module")
def attacked(
    ckpt_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[str], str]:
    out = tmp_path_factory.mktemp("cli") / "results"
    argv = _main_argv(ckpt_dirs, out)
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(argv) == 0
    return out, argv, buf.getvalue()


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("rbs attack: error: "), lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- success


def test_attack_writes_results_and_report(attacked: tuple[Path, list[str], str]) -> None:
    out, _, stdout = attacked
    for name in ("results.csv", "results.parquet", "results.json", "report.html", "report.md"):
        assert (out / name).is_file(), name
    costs = read_costs(out)  # the modelled hardware cost of every checkpoint (rbs/finish.py)
    assert set(costs["checkpoint"]) == {"dense", "window-70"}
    assert "Robustness against modelled cost" in (out / "report.md").read_text(encoding="utf-8")
    assert f"results: {out / 'results.csv'}" in stdout
    assert f"report:  {out / 'report.html'}" in stdout
    side = read_sidecar(out)
    assert all(c["passed"] for c in side["invariants"].values()), side["invariants"]
    for key in ("versions", "device", "git_revision", "total_seconds", "command"):
        assert key in side, key
    assert side["command"].startswith("rbs attack ")
    assert "pgd.steps=3" in side["command"] and str(out) in side["command"]


def test_eps_fractions_are_parsed(attacked: tuple[Path, list[str], str]) -> None:
    df = read_results(attacked[0])
    for attack in ("fgsm", "pgd"):
        got = sorted(df[(df.attack == attack) & (df.checkpoint == "dense")]["epsilon"])
        assert got == pytest.approx(EPS_VALUES, abs=1e-12)
    cw = sorted(df[(df.attack == "cw") & (df.checkpoint == "dense")]["epsilon"])
    assert cw == [0.0, 0.5, 1.0]
    assert (df["n"] == 40).all()
    zero = df[df.epsilon == 0]
    assert (zero["robust_correct"] == zero["clean_correct"]).all()


def test_param_applies(attacked: tuple[Path, list[str], str]) -> None:
    df = read_results(attacked[0])
    pgd = {json.loads(p)["steps"] for p in df[df.attack == "pgd"]["params"]}
    cw = [json.loads(p) for p in df[df.attack == "cw"]["params"]]
    assert pgd == {3}
    assert {(p["steps"], p["binary_search_steps"]) for p in cw} == {(20, 3)}


def test_same_command_resumes(
    attacked: tuple[Path, list[str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    out, argv, _ = attacked
    before = read_results(out)
    assert main(argv) == 0
    capsys.readouterr()
    work = read_sidecar(out)["work"]
    assert work["cells_reused"] == 6 and work["cells_computed"] == 0
    assert_frame_equal(without_timing(read_results(out)), without_timing(before))


def test_different_command_is_refused_unless_overwrite(
    attacked: tuple[Path, list[str], str],
    ckpt_dirs: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(attacked[0], out)
    before = _snapshot(out)
    other = _argv(ckpt_dirs, out, "--attack", "fgsm", "--eps", "0,0.1", "--limit", "20")
    assert main(other) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "--overwrite" in line
    assert _snapshot(out) == before
    assert main([*other, "--overwrite", "--no-report"]) == 0
    capsys.readouterr()
    df = read_results(out)
    assert set(df["attack"]) == {"fgsm", WORST_CASE}
    assert (df["n"] == 20).all()
    assert not (out / "report.html").exists()


# ----------------------------------------------------------------------------- user errors


@pytest.mark.parametrize(
    ("eps", "match"),
    [
        ("0,nan", "finite"),
        ("0,inf", "finite"),
        ("-0.1,0", "invalid"),
        ("0,0.1,0.1", "duplicates"),
        ("0,abc", "not a number"),
        ("0,1/0", "not a number"),
        (",", "empty"),
    ],
)
def test_bad_eps_exit_2(
    eps: str,
    match: str,
    ckpt_dirs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    assert main(_argv(ckpt_dirs, out, "--attack", "fgsm", f"--eps={eps}")) == 2
    assert match in _one_line_error(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        (["--attack", "deepfool"], ["fgsm", "pgd", "cw"]),
        (["--attack", "fgsm", "--backend", "keras"], ["native", "torchattacks", "foolbox"]),
        (["--attack", "cw", "--backend", "torchattacks"], ["cw-fixed-c", "pgd"]),
    ],
)
def test_unknown_attack_or_backend_exit_2(
    extra: list[str],
    names: list[str],
    ckpt_dirs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    assert main(_argv(ckpt_dirs, out, *extra)) == 2
    line = _one_line_error(capsys.readouterr().err)
    for name in names:
        assert name in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("param", "match"),
    [
        ("pgd=3", "ATTACK.KEY=VALUE"),
        ("cw.steps=3", "not among"),
        ("fgsm.bogus=1", "bogus"),
        ("fgsm.seed=abc", "seed"),
    ],
)
def test_bad_param_exit_2(
    param: str,
    match: str,
    ckpt_dirs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    assert main(_argv(ckpt_dirs, out, "--attack", "fgsm", "--param", param)) == 2
    assert match in _one_line_error(capsys.readouterr().err)
    assert not out.exists()


def test_missing_checkpoint_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["attack", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    _one_line_error(capsys.readouterr().err)


# ----------------------------------------------------------------------------- plain state dict


def test_plain_state_dict_with_arch_and_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = dataset_info("digits")
    torch.manual_seed(0)
    model = create_model_for("small_cnn", info)
    path = tmp_path / "plain.pt"
    torch.save(model.state_dict(), path)
    out = tmp_path / "out"
    base = ["attack", "--checkpoint", str(path), "--attack", "fgsm", "--eps", "0,0.1"]
    base += ["--limit", "20", "--no-report", "--out", str(out)]
    assert main(base) == 2  # no --arch / --dataset
    assert "--arch" in _one_line_error(capsys.readouterr().err)
    assert not out.exists()
    assert main([*base, "--arch", "small_cnn", "--dataset", "digits"]) == 0
    capsys.readouterr()
    df = read_results(out)
    assert set(df["checkpoint"]) == {"plain"}
    assert set(df["arch"]) == {"small_cnn"} and set(df["granularity"]) == {"dense"}
    zero = df[df.epsilon == 0]
    assert (zero["robust_correct"] == zero["clean_correct"]).all() and (df["n"] == 20).all()


# ----------------------------------------------------------------------------- plot / report


def test_plot_and_report(
    attacked: tuple[Path, list[str], str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(attacked[0], out)
    shutil.rmtree(out / "figures")
    (out / "report.html").unlink()
    assert main(["plot", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert str(out / "figures" / "robustness_curves_linf.png") in printed
    assert all(Path(p).is_file() for p in printed)
    assert main(["report", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert f"report: {out / 'report.html'}" in stdout
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "dense" in html and "window-70" in html


def test_plot_and_report_need_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("plot", "report"):
        assert main([cmd, str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"rbs {cmd}: error: ") and "results.csv" in err


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--attack", "fgsm", "--eps", "0,8"], ["linf epsilon 8 >= 1", "8/255 = 0.03137"]),
        (["--attack", "fgsm", "--eps", "0,1,2"], ["linf epsilon 1 >= 1", "linf epsilon 2 >= 1"]),
        (["--attack", "pgd-l2", "--eps-l2", "0,9"], ["sqrt(64) = 8", "9/255 = 0.03529"]),
        (
            ["--attack", "apgd-ce-l1", "--param", "apgd-ce-l1.steps=3", "--eps-l1", "0,70"],
            ["L1 diameter 64", "70/255 = 0.2745"],
        ),
    ],
)
def test_epsilon_in_the_wrong_unit_is_warned_once_and_recorded(
    extra: list[str],
    said: list[str],
    ckpt_dirs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Issue 14: `--eps 0,8` on [0, 1] images was accepted silently (robust accuracy 0 at eps 8).
    out = tmp_path / "out"
    argv = _argv(ckpt_dirs, out, *extra, "--limit", "6", "--batch-size", "4", "--no-report")
    assert main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    warnings = [line for line in err if line.startswith("W evaluations.engine.grid: ")]
    recorded = read_sidecar(out)["epsilon_warnings"]
    # once per grid: not per checkpoint (two), attack or batch (two)
    assert len(warnings) == len(recorded) == len([s for s in said if ">= 1" in s] or [1])
    for fragment in said:
        assert any(fragment in line for line in warnings), (fragment, warnings)
        assert any(fragment in message for message in recorded)


# ----------------------------------------------------------------------------- protocols


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--protocol", "fast"], "unknown protocol 'fast'; valid: quick, standard, thorough"),
        (["--protocol", "quick", "--attack", "pgd"], "give --protocol or --attack, not both"),
        (["--protocol", "quick", "--param", "fmn.steps=3"], "not in protocol 'quick'"),
    ],
)
def test_bad_protocol_exit_2(
    extra: list[str],
    match: str,
    ckpt_dirs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    assert main(_argv(ckpt_dirs, out, *extra)) == 2
    assert match in _one_line_error(capsys.readouterr().err)
    assert not out.exists()


def test_hand_picked_attacks_record_custom_protocol_checks_and_min_norms(
    attacked: tuple[Path, list[str], str],
) -> None:
    out = attacked[0]
    side = read_sidecar(out)
    assert side["protocol"]["name"] == "custom"  # pgd.steps=3 is not the quick protocol
    assert set(side["masking"]["checks"]) == {
        "unbounded_budget",
        "black_box_beats_white_box",
        "zero_gradients",
        "randomness",
        "not_converged",
        "batch_dependence",
    }
    assert {r["attack"] for r in side["paper_deviations"]} >= {"pgd", "cw"}
    assert (out / "min_norms.parquet").is_file() and (out / "min_norms.csv").is_file()
    assert (out / "figures" / "security_curves_linf.png").is_file()
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "gradient-masking checks" in report and "Minimum-norm security curves" in report


def test_protocol_quick_is_recorded(
    ckpt_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = {"dense": ckpt_dirs["dense"]}
    out = tmp_path / "quick"
    argv = _argv(first, out, "--protocol", "quick", "--eps", EPS, "--limit", "12", "--no-report")
    assert main(argv) == 0
    side = read_sidecar(out)
    assert side["protocol"]["label"] == "quick/v1"
    assert sorted(read_results(out)["attack"].unique()) == ["cw", "fgsm", "pgd", WORST_CASE]


def test_masking_off_is_recorded_and_shown_at_the_top_of_the_report(
    ckpt_dirs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "off"
    argv = _argv({"dense": ckpt_dirs["dense"]}, out, "--attack", "fgsm", "--eps", EPS)
    assert main([*argv, "--limit", "12", "--masking", "off"]) == 0
    side = read_sidecar(out)
    assert side["masking"]["mode"] == "off" and side["request"]["masking"] == "off"
    assert side["masking"]["checks"]["black_box_beats_white_box"]["flagged"] is None
    report = (out / "report.md").read_text(encoding="utf-8")
    off = report.index("--masking off")
    assert off < report.index("Evaluation protocol and gradient-masking checks")


def test_unknown_masking_mode_exit_2(
    ckpt_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bad"
    argv = _argv({"dense": ckpt_dirs["dense"]}, out, "--attack", "fgsm", "--masking", "some")
    assert main(argv) == 2
    assert "--masking 'some'" in _one_line_error(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.slow
def test_l1_grid_runs_l1_attacks_verified_and_reported(
    ckpt_dirs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "l1"
    extra = ["--attack", "apgd-ce-l1", "--attack", "apgd-t-l1", "--eps-l1", "0,1,3"]
    extra += ["--param", "apgd-ce-l1.steps=6", "--param", "apgd-ce-l1.restarts=1"]
    extra += ["--param", "apgd-t-l1.steps=6", "--param", "apgd-t-l1.n_target_classes=2"]
    argv = _argv({"dense": ckpt_dirs["dense"]}, out, *extra, "--limit", "16")
    assert main(argv) == 0
    df = read_results(out)
    assert set(df["norm"]) == {"l1"}
    assert sorted(df["attack"].unique()) == ["apgd-ce-l1", "apgd-t-l1", WORST_CASE]
    wc = df[df["attack"] == WORST_CASE].sort_values("epsilon")
    assert wc["epsilon"].tolist() == [0.0, 1.0, 3.0]
    assert wc["robust_correct"].is_monotonic_decreasing
    assert int(wc["robust_correct"].iloc[0]) == int(wc["clean_correct"].iloc[0])
    side = read_sidecar(out)
    unbounded = side["masking"]["checks"]["unbounded_budget"]
    assert "l1" in json.dumps(unbounded) and "apgd-ce-l1" in json.dumps(unbounded)
    assert "L1" in (out / "report.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("command", ["attack", "run"])
def test_ctrl_c_says_rerunning_resumes(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import rbs.attack_job
    import rbs.run_job

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(rbs.attack_job, "run_attack_command", interrupted)
    monkeypatch.setattr(rbs.run_job, "run_experiment", interrupted)
    argv = (
        ["attack", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "r")]
        if command == "attack"
        else ["run", "--out", str(tmp_path / "r")]
    )
    from rbs.cli import main

    assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        err
        == f"rbs {command}: interrupted; re-run the same command to resume (finished work is kept)"
    )


def test_help_names_every_registered_backend_attack_and_protocol(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Field report 6 of issue 29: the help comes from the registries, so it cannot go stale."""
    from attacks import list_attacks, list_backends
    from evaluations.engine.protocols import protocol_names

    with pytest.raises(SystemExit):
        main(["attack", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps (and may hyphen-break)
    flat = text.replace("- ", "-")
    assert f"where the attacks come from: {', '.join(list_backends())}" in flat
    assert f"attack name, repeatable: {', '.join(list_attacks('native'))};" in flat
    for backend in list_backends()[1:]:  # every other backend with every attack it registers
        assert f"{backend}: {', '.join(list_attacks(backend))}" in flat, backend
    for name in protocol_names():
        assert f"{name} (" in flat, name
