"""rbs.overrides: ``--config`` + ``--set SECTION.KEY=VALUE`` + flag aliases on train, attack, run.

The value parser, the key checks, the precedence (flags / ``--set`` > ``--config`` > defaults),
that every flag is an alias of a key that exists, and the one-line errors (exit 2).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rbs.attack_job
import rbs.run_job
import robustbench_sparse.train_job as train_job_module
from rbs.attack_job import ATTACK_SCHEMA, AttackRunRequest, request_from_config
from rbs.cli import build_parser, main
from rbs.commands import attack as attack_command
from rbs.commands import run as run_command
from rbs.commands import train as train_command
from rbs.overrides import Alias, check_path, command_line_layer, parse_set, parse_value
from rbs.run_job import RUN_SCHEMA, ExperimentPlan
from robustbench_sparse.checkpoint import META_FILE
from robustbench_sparse.config import ConfigSchema, deep_merge
from robustbench_sparse.errors import UserError
from robustbench_sparse.train_job import TRAIN_SCHEMA, TrainJob, train_job_from_config
from tests.core_helpers import BATCH_SIZE, TEST_LIMIT, TRAIN_LIMIT, WIDTH, single_thread


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # main() installs its own stderr handler on the root logger; put pytest's back afterwards.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class _Captured(Exception):
    """Raised by a stand-in for the library call: carries what the CLI built."""

    def __init__(self, value: Any) -> None:
        super().__init__("captured")
        self.value = value


def _raise(value: Any, *_: Any, **__: Any) -> Any:
    raise _Captured(value)


def _job(monkeypatch: pytest.MonkeyPatch, *argv: str) -> TrainJob:
    """The TrainJob ``rbs train ARGV`` would train (nothing is trained)."""
    monkeypatch.setattr(train_job_module, "run_train_job", _raise)
    with pytest.raises(_Captured) as info:
        main(["-q", "train", "--out", "unused", *argv])
    job = info.value.value
    assert isinstance(job, TrainJob)
    return job


def _request(monkeypatch: pytest.MonkeyPatch, *argv: str) -> AttackRunRequest:
    monkeypatch.setattr(rbs.attack_job, "run_attack_command", _raise)
    with pytest.raises(_Captured) as info:
        main(["-q", "attack", "--out", "unused", *argv])
    request = info.value.value
    assert isinstance(request, AttackRunRequest)
    return request


def _plan(monkeypatch: pytest.MonkeyPatch, *argv: str) -> ExperimentPlan:
    monkeypatch.setattr(rbs.run_job, "run_experiment", _raise)
    with pytest.raises(_Captured) as info:
        main(["-q", "run", "--out", "unused", *argv])
    plan = info.value.value
    assert isinstance(plan, ExperimentPlan)
    return plan


def _user_error(capsys: pytest.CaptureFixture[str], argv: list[str], command: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"rbs {command}: error: ") and "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------------- the value parser
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("0.7", 0.7),
        ("true", True),
        ('[0.1, "8/255"]', [0.1, "8/255"]),
        ('[0.1,"8/255"]', [0.1, "8/255"]),
        ('"quoted"', "quoted"),
        ("mnist", "mnist"),  # not TOML: the bare word
        ("8/255", "8/255"),
        ("cuda:0", "cuda:0"),
        ("{ steps = 40 }", {"steps": 40}),
        ("", ""),
    ],
)
def test_parse_value_reads_toml_or_keeps_the_word(text: str, value: Any) -> None:
    assert parse_value(text) == value


def test_parse_set_splits_the_key_path() -> None:
    assert parse_set("train.epochs=3", TRAIN_SCHEMA) == (("train", "epochs"), 3)
    assert parse_set("sparsity.target = 0.7", TRAIN_SCHEMA) == (("sparsity", "target"), 0.7)
    assert parse_set("model.width=0.5", TRAIN_SCHEMA) == (("model", "width"), 0.5)  # any key
    assert parse_set("name=dense", TRAIN_SCHEMA) == (("name",), "dense")  # a top-level value
    path, value = parse_set("attack.params.pgd.steps=40", ATTACK_SCHEMA)
    assert (path, value) == (("attack", "params", "pgd", "steps"), 40)
    assert parse_set("data.mean=[0.5, 0.5]", TRAIN_SCHEMA)[1] == [0.5, 0.5]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train.epochs", "--set 'train.epochs': expected SECTION.KEY=VALUE, e.g. train.epochs=3"),
        ("epochs=3", "--set 'epochs=3': expected SECTION.KEY=VALUE, e.g. train.epochs=3"),
        ("train.=3", "--set 'train.=3': expected SECTION.KEY=VALUE, e.g. train.epochs=3"),
        (
            "trian.epochs=3",
            "--set trian.epochs: unknown section 'trian'; did you mean 'train'? (valid: "
            "adversarial, data, model, name, sparsity, train)",
        ),
        (
            "train.epoch=3",
            "--set train.epoch: unknown key 'epoch' in [train]; did you mean 'epochs'? (valid: ",
        ),
        ("sparsity.targt=0.7", "did you mean 'target'?"),
        ("name.x=1", "--set name.x: 'name' is a value, not a table; use --set name=VALUE"),
    ],
)
def test_parse_set_refuses_unknown_keys_in_one_line(text: str, message: str) -> None:
    with pytest.raises(UserError) as info:
        parse_set(text, TRAIN_SCHEMA)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_deep_merge_lays_tables_over_tables() -> None:
    base = {"attack": {"limit": 10, "params": {"pgd": {"steps": 20, "restarts": 1}}}, "a": [1]}
    patch = {"attack": {"params": {"pgd": {"steps": 40}}, "device": None}, "a": [2]}
    merged = deep_merge(base, patch)
    assert merged == {"attack": {"limit": 10, "params": {"pgd": {"steps": 40, "restarts": 1}}},
                      "a": [2]}  # fmt: skip
    assert base["attack"]["params"]["pgd"]["steps"] == 20  # inputs untouched


# ------------------------------------------------------------------------- flags and --set
_ALIASES = (
    Alias("--epochs", "train.epochs", type=int),
    Alias("--param", "attack.params", action="append", convert=lambda v, f: {"pgd": {"s": 1}}),
)
_SCHEMA = ConfigSchema({"train": ("epochs", "lr"), "attack": ("params",)})


def _namespace(**values: Any) -> argparse.Namespace:
    args = argparse.Namespace(set_values=values.pop("set_values", []))
    for alias in _ALIASES:
        setattr(args, alias.dest, values.pop(alias.flag.lstrip("-"), None))
    return args


def test_command_line_layer_is_one_nested_dict() -> None:
    args = _namespace(set_values=["train.lr=0.5", "train.lr=0.25"], epochs=3)
    assert command_line_layer(args, _ALIASES, _SCHEMA) == {"train": {"lr": 0.25, "epochs": 3}}
    args = _namespace(param=["x"], set_values=["attack.params.cw.steps=9"])
    layer = command_line_layer(args, _ALIASES, _SCHEMA)
    assert layer == {"attack": {"params": {"cw": {"steps": 9}, "pgd": {"s": 1}}}}


def test_a_flag_and_set_may_not_set_the_same_key() -> None:
    args = _namespace(set_values=["train.epochs=4"], epochs=3)
    with pytest.raises(UserError, match=r"--epochs and --set train.epochs both set"):
        command_line_layer(args, _ALIASES, _SCHEMA)
    args = _namespace(param=["x"], set_values=["attack.params.pgd.s=2"])
    with pytest.raises(UserError, match=r"--param and --set attack\.params\.pgd\.s"):
        command_line_layer(args, _ALIASES, _SCHEMA)


@pytest.mark.parametrize(
    ("aliases", "schema"),
    [
        (train_command.ALIASES, TRAIN_SCHEMA),
        (attack_command.ALIASES, ATTACK_SCHEMA),
        (run_command.ALIASES, RUN_SCHEMA),
    ],
    ids=["train", "attack", "run"],
)
def test_every_flag_is_an_alias_of_a_key_that_exists(
    aliases: tuple[Alias, ...], schema: ConfigSchema
) -> None:
    assert len({a.key for a in aliases}) == len(aliases)
    for alias in aliases:
        check_path(alias.key.split("."), schema, alias.flag)


def test_train_help_lists_the_everyday_flags_first() -> None:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = action.choices["train"].format_help()
    sections = [line for line in text.splitlines() if line.endswith(":")]
    assert sections[0] == "everyday:"  # the first group after usage and the description
    everyday = text.index("\neveryday:")
    for flag in ("--config", "--set", "--out", "--sparsity", "--granularity", "--method",
                 "--epochs", "--lr", "--seed", "--dataset", "--arch"):  # fmt: skip
        assert everyday < text.index(f"\n  {flag} ") < text.index("\noptions:"), flag
    assert "[train.epochs]" in text and "[sparsity.target]" in text


# ------------------------------------------------------------------------------ rbs train
def test_set_and_flags_build_the_same_job(monkeypatch: pytest.MonkeyPatch) -> None:
    by_flags = _job(
        monkeypatch, "--epochs", "3", "--sparsity", "0.7", "--granularity", "channel",
        "--milestones", "1,2", "--adv-eps", "8/255", "--adversarial", "pgd",
        "--include", "net.*", "--no-amp", "--mean", "0.5", "--name", "n", "--arch", "resnet20",
    )  # fmt: skip
    by_set = _job(
        monkeypatch,
        "--set", "train.epochs=3", "--set", "sparsity.target=0.7",
        "--set", "sparsity.granularity=channel", "--set", "train.milestones=[1, 2]",
        "--set", "adversarial.eps=8/255", "--set", "adversarial.method=pgd",
        "--set", 'sparsity.include=["net.*"]', "--set", "train.amp=false",
        "--set", "data.mean=[0.5]", "--set", "name=n", "--set", "model.arch=resnet20",
    )  # fmt: skip
    assert by_set == by_flags
    assert by_set.train.epochs == 3 and by_set.sparsity.target == 0.7
    assert by_set.adversarial.eps == pytest.approx(8 / 255)


def test_precedence_command_line_over_config_over_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        "name = 'from-file'\n[model]\nwidth = 0.5\n[train]\nepochs = 10\nlr = 0.01\n"
        "[sparsity]\ntarget = 0.5\ngranularity = 'channel'\n"
    )
    job = _job(monkeypatch, "--config", str(config), "--set", "train.epochs=3", "--sparsity", "0.7")
    assert job.train.epochs == 3 and job.sparsity.target == 0.7  # command line > file
    assert job.train.lr == 0.01 and job.sparsity.granularity.value == "channel"  # file
    assert job.arch_kwargs == (("width", 0.5),) and job.name == "from-file"
    assert job.train.batch_size == 64  # the dataset's default
    assert (job.sparsity.start, job.sparsity.end) == (0.3, 1.5)  # default window of 3 epochs
    assert job == train_job_from_config(
        {"name": "from-file", "model": {"width": 0.5}, "train": {"epochs": 10, "lr": 0.01},
         "sparsity": {"target": 0.5, "granularity": "channel"}},
        {"train": {"epochs": 3}, "sparsity": {"target": 0.7}},
    )  # fmt: skip


def test_the_library_takes_the_same_nested_dict() -> None:
    nested = train_job_from_config({}, {"train": {"epochs": 4, "lr": None}, "name": "x"})
    keywords = train_job_from_config({}, train_overrides={"epochs": 4}, name="x")
    assert nested == keywords and nested.train.epochs == 4 and nested.name == "x"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--set", "trian.epochs=3"], "unknown section 'trian'; did you mean 'train'?"),
        (["--set", "train.epoch=3"], "unknown key 'epoch' in [train]; did you mean 'epochs'?"),
        (["--set", "train.epochs=ten"], "[train] epochs: expected int, got 'ten'"),
        (["--set", "sparsity.target=1.5"], "sparsity target must be in [0, 1), got 1.5"),
        (["--set", "epochs"], "expected SECTION.KEY=VALUE"),
        (["--epochs", "3", "--set", "train.epochs=4"], "both set train.epochs; give one"),
        (["--set", "data.dataset=mnits"], "unknown dataset 'mnits'"),
    ],
)
def test_train_override_errors_are_one_line(
    argv: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _user_error(capsys, ["train", "--out", str(tmp_path / "o"), *argv], "train")
    assert fragment in line
    assert not (tmp_path / "o").exists()


def test_train_with_config_and_set_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's acceptance: ``rbs train --config X --set train.epochs=3 --set sparsity.target=0.7``."""
    config = tmp_path / "tiny.toml"
    config.write_text(
        f"[data]\ntrain_limit = {TRAIN_LIMIT}\ntest_limit = {TEST_LIMIT}\n"
        f"[model]\nwidth = {WIDTH}\n"
        f"[train]\nepochs = 10\nbatch_size = {BATCH_SIZE}\nwarmup_epochs = 0.5\ndevice = 'cpu'\n"
        "[sparsity]\ngranularity = 'window'\nupdate_every = 3\n"
    )
    out = tmp_path / "D"
    argv = ["-q", "train", "--config", str(config), "--set", "train.epochs=3"]
    with single_thread():
        assert main([*argv, "--set", "sparsity.target=0.7", "--out", str(out)]) == 0
    assert "sparsity: target 0.700" in capsys.readouterr().out
    meta = json.loads((out / META_FILE).read_text())
    assert meta["training"]["epochs"] == meta["epochs_completed"] == 3
    assert meta["sparsity"]["target"] == 0.7 and meta["granularity"] == "window"
    assert meta["data"]["train_limit"] == TRAIN_LIMIT and meta["arch_kwargs"] == {"width": WIDTH}


# ----------------------------------------------------------------------------- rbs attack
def test_attack_set_and_flags_build_the_same_request(monkeypatch: pytest.MonkeyPatch) -> None:
    by_flags = _request(
        monkeypatch, "--checkpoint", "a", "--checkpoint", "b", "--attack", "pgd",
        "--eps", "0.1,8/255", "--param", "pgd.steps=40", "--limit", "7", "--no-report",
        "--dataset", "digits", "--normalize", "none",
    )  # fmt: skip
    by_set = _request(
        monkeypatch, "--set", 'attack.checkpoints=["a", "b"]', "--set", 'attack.attacks=["pgd"]',
        "--set", 'epsilons.linf=[0.1,"8/255"]', "--set", "attack.params.pgd.steps=40",
        "--set", "attack.limit=7", "--set", "attack.report=false",
        "--set", "data.dataset=digits", "--set", "model.normalize=none",
    )  # fmt: skip
    assert by_set == by_flags
    assert by_set.linf_epsilons == [0.1, pytest.approx(8 / 255)]
    assert by_set.fingerprint() == by_flags.fingerprint()


def test_attack_defaults_keep_the_old_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    request = _request(monkeypatch, "--checkpoint", "a")
    assert request == AttackRunRequest(checkpoints=(Path("a"),))


def test_attack_config_file_and_the_command_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "a.toml"
    config.write_text(
        "[attack]\ncheckpoints = ['ck']\nprotocol = 'standard'\nlimit = 50\nbatch_size = 100\n"
        "[epsilons]\nlinf = [0, '2/255']\n"
    )
    request = _request(monkeypatch, "--config", str(config), "--limit", "5")
    assert request.checkpoints == (Path("ck"),) and request.protocol == "standard"
    assert (request.limit, request.batch_size) == (5, 100)
    assert request.linf_epsilons == [0.0, pytest.approx(2 / 255)]
    # an attack list on the command line replaces the file's protocol (and the reverse)
    picked = _request(monkeypatch, "--config", str(config), "--attack", "fgsm")
    assert picked.protocol is None and picked.attacks == ("fgsm",)
    config.write_text("[attack]\ncheckpoints = ['ck']\nattacks = ['fgsm']\n")
    assert _request(monkeypatch, "--config", str(config), "--protocol", "quick").protocol == "quick"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--checkpoint", "c", "--set", "attack.eps=[0.1]"], "unknown key 'eps' in [attack]"),
        (["--checkpoint", "c", "--set", "epsilon.linf=[0.1]"], "did you mean 'epsilons'?"),
        (["--checkpoint", "c", "--set", "attack.limit=many"], "[attack] limit: expected int"),
        (["--checkpoint", "c", "--set", 'epsilons.linf=[0,"8/O"]'], "'8/O' is not a number"),
        (["--checkpoint", "c", "--set", "epsilons.linf=0.1"], "expected a list of epsilons"),
        (["--set", "attack.limit=3"], "required: --checkpoint"),
        (["--checkpoint", "c", "--protocol", "quick", "--attack", "pgd"], "give --protocol or"),
        (["--checkpoint", "c", "--eps", "0,abc"], "--eps: 'abc' is not a number"),
    ],
)
def test_attack_override_errors_are_one_line(
    argv: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _user_error(capsys, ["attack", "--out", str(tmp_path / "o"), *argv], "attack")
    assert fragment in line
    assert not (tmp_path / "o").exists()


def test_request_from_config_checks_its_sections() -> None:
    with pytest.raises(UserError, match="give protocol or attacks"):
        request_from_config({"attack": {"checkpoints": ["a"], "protocol": "quick",
                                        "attacks": ["pgd"]}})  # fmt: skip
    with pytest.raises(UserError, match=r"\[data\] must be a table"):
        request_from_config({"attack": {"checkpoints": ["a"]}, "data": 3})


# -------------------------------------------------------------------------------- rbs run
def test_run_set_and_flags_plan_the_same_experiment(monkeypatch: pytest.MonkeyPatch) -> None:
    by_flags = _plan(monkeypatch, "--epochs", "2", "--limit", "9", "--protocol", "standard")
    by_set = _plan(
        monkeypatch, "--set", "train.epochs=2", "--set", "attack.limit=9",
        "--set", "attack.protocol=standard",
    )  # fmt: skip
    assert by_set.fingerprint() == by_flags.fingerprint()
    assert by_set.grid.limit == 9 and by_set.models[0].job.train.epochs == 2


def test_run_set_reaches_every_section(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _plan(
        monkeypatch, "--set", "models.targets=[0.7]", "--set", 'models.granularities=["window"]',
        "--set", "attack.params.cw.steps=9", "--set", 'attack.attacks=["cw"]',
        "--set", 'epsilons.l2=[0, "1/2"]', "--set", "model.width=0.5",
    )  # fmt: skip
    assert [m.name for m in plan.models] == ["dense", "window-70"]
    assert [s.name for s in plan.grid.attacks] == ["cw"]
    assert dict(plan.grid.attacks[0].params) == {"steps": 9}
    assert plan.models[0].job.arch_kwargs == (("width", 0.5),)
    assert plan.grid.l2_epsilons == (0.0, 0.5)


def test_run_without_overrides_is_the_default_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _plan(monkeypatch).fingerprint() == rbs.run_job.plan_experiment().fingerprint()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--set", "models.target=[0.7]"], "unknown key 'target' in [models]; did you mean"),
        (["--set", "atack.limit=3"], "unknown section 'atack'; did you mean 'attack'?"),
        (["--set", "attack.protocol=fast"], "unknown protocol 'fast'"),
        (["--epochs", "2", "--set", "train.epochs=3"], "both set train.epochs"),
    ],
)
def test_run_override_errors_are_one_line(
    argv: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _user_error(capsys, ["run", "--out", str(tmp_path / "o"), *argv], "run")
    assert fragment in line
    assert not (tmp_path / "o").exists()
