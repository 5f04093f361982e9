"""cli: ``rbs train`` / ``rbs inspect`` / ``rbs models``; user errors exit 2 with one line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import robustbench_sparse.train_job as train_job_module
from rbs.cli import main
from robustbench_sparse.checkpoint import META_FILE, WEIGHTS_FILE
from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity import kept_per_group
from robustbench_sparse.training import Checkpointer
from tests.core_helpers import (
    BATCH_SIZE,
    TEST_LIMIT,
    TRAIN_LIMIT,
    WIDTH,
    assert_tensors_identical,
    read_weights_file,
    single_thread,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # main() installs its own stderr handler on the root logger; put pytest's back afterwards.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    package = logging.getLogger("robustbench_sparse")
    package_level = package.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    package.setLevel(package_level)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(f"[model]\narch = 'small_cnn'\nwidth = {WIDTH}\n")
    return path


def train_args(config: Path, out: Path, *extra: str, sparsity: str = "0.7") -> list[str]:
    return [
        "-q",
        "train",
        "--config",
        str(config),
        "--out",
        str(out),
        "--train-limit",
        str(TRAIN_LIMIT),
        "--test-limit",
        str(TEST_LIMIT),
        "--batch-size",
        str(BATCH_SIZE),
        "--epochs",
        "3",
        "--warmup-epochs",
        "0.5",
        "--device",
        "cpu",
        "--seed",
        "1",
        "--sparsity",
        sparsity,
        "--prune-start",
        "0.5",
        "--prune-end",
        "2",
        "--update-every",
        "3",
        *extra,
    ]


def assert_user_error(capsys: pytest.CaptureFixture[str], code: int, command: str) -> str:
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"rbs {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------------------- models
def test_models_lists_small_cnn_and_datasets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    models_line = next(line for line in out.splitlines() if line.startswith("models:"))
    assert "small_cnn" in models_line and "resnet20" in models_line
    assert "digits" in next(line for line in out.splitlines() if line.startswith("datasets:"))


def test_no_command_prints_help_and_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: rbs" in capsys.readouterr().out


# ------------------------------------------------------------------------ argparse errors
@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--out", "x", "--granularity", "blocky"],
        ["train", "--out", "x", "--optimizer", "rmsprop"],
        ["train", "--out", "x", "--lr-schedule", "linear"],
        ["train", "--out", "x", "--epochs", "three"],
        ["train"],  # --out is required
        ["no-such-command"],
    ],
)
def test_argparse_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


# ------------------------------------------------------------------------ user errors: exit 2
@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--dataset", "digitz"], "unknown dataset 'digitz'"),
        (["--arch", "small_cn"], "small_cnn"),
        (["--sparsity", "1.5"], "sparsity target must be in [0, 1), got 1.5"),
        (["--sparsity", "-0.1"], "sparsity target must be in [0, 1)"),
        (["--prune-end", "9"], "pruning ends at epoch 9.0"),
        (["--lr", "-1"], "learning rate"),
        (["--milestones", "1,x"], "--milestones: 'x' is not a number"),
        (["--adversarial", "gaussian"], "needs --noise-sigma in (0, 4]"),
        (["--adversarial", "pgd", "--adv-eps", "0.1", "--noise-sigma", "0.25"], "gaussian only"),
    ],
)
def test_train_user_errors(
    extra: list[str],
    fragment: str,
    config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(train_args(config_file, tmp_path / "out", *extra))
    line = assert_user_error(capsys, code, "train")
    assert fragment in line
    assert not (tmp_path / "out" / WEIGHTS_FILE).exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_on_cuda_without_cuda(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(train_args(config_file, tmp_path / "out", "--device", "cuda"))
    line = assert_user_error(capsys, code, "train")
    assert "CUDA is not available" in line


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(train_args(tmp_path / "nope.toml", tmp_path / "out"))
    assert "nope.toml" in assert_user_error(capsys, code, "train")


def test_inspect_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["inspect", str(tmp_path / "missing")])
    assert "does not exist" in assert_user_error(capsys, code, "inspect")
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["inspect", str(empty)])
    assert "missing" in assert_user_error(capsys, code, "inspect")


# ------------------------------------------------------------------ train, inspect, refuse
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    config = root / "tiny.toml"
    config.write_text(f"[model]\nwidth = {WIDTH}\n")
    out = root / "window"
    handlers = logging.getLogger().handlers[:]
    try:
        with single_thread():
            assert main(train_args(config, out, "--granularity", "window")) == 0
    finally:
        logging.getLogger().handlers[:] = handlers
    return out


def test_train_writes_a_window_checkpoint(trained: Path) -> None:
    meta = json.loads((trained / META_FILE).read_text())
    assert meta["kind"] == "final" and meta["epochs_completed"] == 3
    assert meta["granularity"] == "window" and meta["sparsity_target"] == 0.7
    assert meta["arch_kwargs"] == {"width": WIDTH}
    assert meta["training"]["seed"] == 1 and meta["training"]["epochs"] == 3
    assert meta["data"]["train_limit"] == TRAIN_LIMIT
    assert meta["sparsity"]["start"] == 0.5 and meta["sparsity"]["end"] == 2.0
    state, masks = read_weights_file(trained)
    counts = (state["net.conv2.0.weight"] != 0).reshape(-1, 9).sum(1)
    assert set(counts.tolist()) == {kept_per_group(9, 0.7)}
    assert len(masks) == 4


def test_existing_out_is_refused_and_left_unchanged(
    trained: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()}
    code = main(train_args(config_file, trained))
    line = assert_user_error(capsys, code, "train")
    assert "already exists" in line and "--overwrite" in line
    assert {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()} == before


def test_inspect_prints_table_and_accuracy(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(trained)]) == 0
    out = capsys.readouterr().out
    meta = json.loads((trained / META_FILE).read_text())
    assert out.splitlines()[0] == "window: small_cnn on digits, granularity window"
    for name in ("net.conv1.0.weight", "net.conv2.0.weight", "net.conv5.0.weight", "net.fc.weight"):
        assert name in out
    conv2 = next(line for line in out.splitlines() if line.startswith("net.conv2.0.weight"))
    assert "window" in conv2 and "66.67%" in conv2
    conv1 = next(line for line in out.splitlines() if line.startswith("net.conv1.0.weight"))
    assert "dense" in conv1
    assert "balanced-filter" in out
    assert f"clean test accuracy: {meta['clean_accuracy']:.4f}" in out
    assert f"({meta['test_correct']}/{TEST_LIMIT})" in out


def test_inspect_json(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--json", str(trained / WEIGHTS_FILE)]) == 0
    report = json.loads(capsys.readouterr().out)
    meta = json.loads((trained / META_FILE).read_text())
    assert report["name"] == "window" and report["arch"] == "small_cnn"
    assert report["granularity"] == "window" and report["sparsity_target"] == 0.7
    assert report["clean_accuracy"] == meta["clean_accuracy"]
    assert report["test_n"] == TEST_LIMIT
    layers = {layer["name"]: layer for layer in report["sparsity_report"]["layers"]}
    assert layers["net.conv3.0.weight"]["kernel_nnz_max"] == 3
    assert layers["net.fc.weight"]["pruned"] is False
    # Recomputed from the weights on disk: matches what training recorded.
    assert report["sparsity_report"] == meta["sparsity_report"]


def test_inspect_edited_checkpoint_is_a_user_error(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    raw = bytearray((trained / WEIGHTS_FILE).read_bytes())
    raw[-1] ^= 0xFF
    (copy / WEIGHTS_FILE).write_bytes(bytes(raw))
    (copy / META_FILE).write_bytes((trained / META_FILE).read_bytes())
    code = main(["inspect", str(copy)])
    assert "checksum differs" in assert_user_error(capsys, code, "inspect")


def test_overwrite_replaces(
    trained: Path, config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "stale.txt").write_text("x")
    assert (
        main(
            train_args(
                config_file,
                out,
                "--overwrite",
                "--epochs",
                "1",
                "--prune-end",
                "1",
                "--sparsity",
                "0",
            )
        )
        == 0
    )
    assert not (out / "stale.txt").exists()
    meta = json.loads((out / META_FILE).read_text())
    assert meta["granularity"] == "dense" and meta["epochs_completed"] == 1
    assert "clean test accuracy" in capsys.readouterr().out


# ------------------------------------------------------------------- resume via the CLI
def test_cli_resume_reproduces_the_uninterrupted_run(
    trained: Path,
    config_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "b"
    args = train_args(config_file, out, "--granularity", "window")  # same run as `trained`
    real = Checkpointer

    def factory(**kwargs: Any) -> Checkpointer:
        save_last = kwargs["save_last"]

        def save_then_stop(model: Any, sparsifier: Any, history: Any, state: Any) -> None:
            save_last(model, sparsifier, history, state)
            if len(history) == 1:
                raise KeyboardInterrupt

        return real(**{**kwargs, "save_last": save_then_stop})

    monkeypatch.setattr(train_job_module, "Checkpointer", factory)
    assert main(args) == 130
    assert "interrupted; re-run with --resume to continue" in capsys.readouterr().err
    assert json.loads((out / META_FILE).read_text())["epochs_completed"] == 1
    monkeypatch.undo()

    assert main(args) == 2  # without --resume the partial run is protected
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    state_a, masks_a = read_weights_file(trained)
    state_b, masks_b = read_weights_file(out)
    assert_tensors_identical(masks_a, masks_b)
    assert_tensors_identical(state_a, state_b)
    assert not (out / "train_state.pt").exists()


def test_misspelled_subcommand_flag_shows_subcommand_usage_and_suggestion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", "x", "--granularty", "window"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: rbs train")  # the subcommand's usage, not the top-level one
    assert "did you mean --granularity?" in err


def test_choices_match_ignoring_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # WINDOW is window; the run then fails later, on purpose, at --epochs 0 (no training)
    assert main(["train", "--out", str(tmp_path / "o"), "--granularity", "WINDOW",
                 "--sparsity", "0.5", "--epochs", "0"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "invalid choice" not in err and "epochs" in err
    assert main(["train", "--out", str(tmp_path / "o"), "--dataset", "MNIST"]) == 2
    assert "Did you mean 'mnist'?" in capsys.readouterr().err


# ------------------------------------------------------------------ training budgets (issue 29)
@pytest.mark.parametrize(
    "extra,toml,fragment",
    [
        (["--adv-eps", "8"], "", "did you mean 8/255 = 0.03137?"),
        (["--adv-eps", "3.0"], "", "did you mean 3/255"),
        (["--adv-eps", "1"], "", "did you mean 1/255"),
        (["--adv-norm", "l2", "--adv-eps", "20"], "", "not below 0.5 x sqrt(64) = 4"),
        (["--set", "adversarial.eps=8"], "", "did you mean 8/255"),
        ([], "[adversarial]\neps = 3.0\n", "did you mean 3/255"),
        ([], "[adversarial]\nnorm = 'l2'\neps = 20\n", "not below 0.5 x sqrt(64)"),
        (["--adv-eps", "0.15", "--adv-eps-warmup", "5"], "", "eps warm-up of 5 epochs"),
        (["--adv-eps", "0.15", "--adv-eps-warmup", "3"], "", "reach only at its last step"),
        (["--adv-eps", "0.15", "--set", "adversarial.eps_warmup_epochs=4"], "", "warm-up of 4"),
    ],
)
def test_a_training_budget_that_cannot_be_trained_is_refused_before_the_first_step(
    extra: list[str],
    toml: str,
    fragment: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "adv.toml"
    config.write_text(f"[model]\narch = 'small_cnn'\nwidth = {WIDTH}\n{toml}")
    code = main(train_args(config, tmp_path / "out", "--adversarial", "pgd", *extra))
    line = assert_user_error(capsys, code, "train")
    assert fragment in line
    assert not (tmp_path / "out").exists()


def test_a_config_files_eps_warmup_is_fitted_to_a_shorter_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from robustbench_sparse.train_job import train_job_from_config

    config: dict[str, dict[str, Any]] = {
        "train": {"epochs": 10},
        "adversarial": {"method": "pgd", "eps": 0.1},
    }
    config["adversarial"]["eps_warmup_epochs"] = 5
    with caplog.at_level(logging.INFO, logger="robustbench_sparse"):
        job = train_job_from_config(config, {"train": {"epochs": 2}})
    assert job.adversarial.eps_warmup_epochs == 1.0
    assert "--adv-eps-warmup" in caplog.text and "rescaled to 1.0" in caplog.text
    with pytest.raises(UserError, match="eps warm-up of 5 epochs"):
        train_job_from_config({**config, "train": {"epochs": 2}})  # the same layer: refused


def test_best_checkpoints_skip_the_eps_warmup_and_augmentation_is_recorded(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "at"
    extra = ("--adversarial", "pgd", "--adv-eps", "0.1", "--adv-steps", "1")
    code = main(
        [
            *train_args(config_file, out, *extra, "--adv-eps-warmup", "2", sparsity="0"),
            "--augment",
            "crop",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "training augmentation: crop (random 8x8 crop after 1 px padding)" in printed
    assert "--augment none turns it off" in printed
    meta = json.loads((out / META_FILE).read_text())
    assert meta["augmentation"] == {
        "setting": "crop",
        "applied": "crop",
        "description": "crop (random 8x8 crop after 1 px padding)",
    }
    assert meta["history"][0]["adv_eps"] < 0.1 <= meta["history"][1]["adv_eps"]
    assert meta["best_epoch"] >= 2 and meta["best_robust_epoch"] >= 2
    assert meta["adversarial_training"]["eps_reached"] == 0.1
    for kind in ("best", "best-robust"):
        sub = json.loads((out / kind / META_FILE).read_text())
        assert sub["epochs_completed"] >= 2
        assert "warm-up" not in sub["adversarial_training"]["label"]


@pytest.mark.parametrize("setting,applied", [("none", "none"), ("auto", "none"), (None, "none")])
def test_digits_train_without_augmentation_by_default(
    setting: str | None,
    applied: str,
    config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    extra = ["--augment", setting] if setting else []
    args = [a if a != "3" else "1" for a in train_args(config_file, tmp_path / "o", sparsity="0")]
    args = [*args[: args.index("--prune-start")], *extra]
    assert main(args) == 0
    assert "training augmentation: none\n" in capsys.readouterr().out
    meta = json.loads((tmp_path / "o" / META_FILE).read_text())
    assert meta["augmentation"]["applied"] == applied
    assert meta["data"]["augment"] == (setting or "auto")
