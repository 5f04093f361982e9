"""Tests for :mod:`rbs.transfer_job` and the transfer flags of ``rbs attack``.

Through :func:`rbs.cli.main`: ``--transfer-from dense --save-adversarials`` on the tiny digits
checkpoints, then ``--adversarials`` on that run's files must give the same counts as the run
that saved them (white-box rows of the source, transfer rows of the target); every mistaken use
exits 2 with one line and leaves no output directory behind.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from evaluations.engine.transfer import TransferPlan
from evaluations.record.adversarials import META_KEY
from evaluations.record.metrics import WORST_CASE
from evaluations.record.results import TRANSFER_FROM, read_results, read_sidecar
from rbs.attack_job import AttackRunRequest, request_from_config
from rbs.cli import main
from rbs.run_job import plan_experiment
from rbs.transfer_job import (
    TRANSFER_DEFAULTS,
    checkpoints_with_source,
    drop_default_transfer_keys,
    experiment_transfer,
)
from robustbench_sparse.config import to_jsonable
from robustbench_sparse.errors import UserError
from tests.eval_helpers import build_checkpoints, single_thread

EPS = "0,0.05,0.1"
COUNTS = ["checkpoint", "epsilon", "n", "clean_correct", "robust_correct"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_checkpoints(tmp_path_factory.mktemp("ckpts"))


def _attack(out: Path, *extra: str) -> list[str]:
    return ["attack", *extra, "--eps", EPS, "--limit", "40", "--no-report", "--out", str(out)]


@pytest.fixture(scope="module")
def first(ckpts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "first"
    argv = _attack(
        out,
        "--checkpoint",
        str(ckpts["window-70"]),
        "--transfer-from",
        str(ckpts["dense"]),  # not among --checkpoint: added (and attacked) first
        "--attack",
        "fgsm",
        "--attack",
        "pgd",
        "--param",
        "pgd.steps=5",
        "--save-adversarials",
    )
    assert main(argv) == 0
    return out


def test_transfer_run_rows_and_sidecar(first: Path) -> None:
    df = read_results(first)
    assert list(dict.fromkeys(df["checkpoint"])) == ["dense", "window-70"]
    transfer = df[df[TRANSFER_FROM] != ""]
    assert set(transfer["attack"]) == {"fgsm from dense", "pgd from dense"}
    assert set(transfer["checkpoint"]) == {"window-70"}
    sidecar = read_sidecar(first)
    assert sidecar["transfer"]["transfer_from"] == "dense"
    assert sidecar["transfer"]["save_adversarials"] is True
    assert sidecar["request"]["transfer_from"].endswith("dense")
    files = sorted(p.relative_to(first).as_posix() for p in first.rglob("*.safetensors"))
    assert files == [
        f"adversarials/{c}/{a}@native.safetensors"
        for c in ("dense", "window-70")
        for a in ("fgsm", "pgd")
    ]


@pytest.mark.slow  # three CLI runs; the same identity at engine level: test_evaluations_engine_transfer
def test_saved_adversarials_reload_to_the_same_robust_accuracy(
    first: Path, ckpts: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "again"
    argv = [
        "attack",
        "--checkpoint",
        str(ckpts["dense"]),
        "--checkpoint",
        str(ckpts["window-70"]),
        "--adversarials",
        str(first / "adversarials" / "dense"),
        "--no-report",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    before, after = read_results(first), read_results(out)
    assert WORST_CASE not in set(after["attack"])  # no white-box attack ran
    for attack in ("fgsm", "pgd"):
        label = f"{attack} from dense"
        # the source scored on its own adversarials: its white-box numbers, exactly
        white = before[(before["checkpoint"] == "dense") & (before["attack"] == attack)]
        mine = after[(after["checkpoint"] == "dense") & (after["attack"] == label)]
        pd.testing.assert_frame_equal(
            white[COUNTS].reset_index(drop=True), mine[COUNTS].reset_index(drop=True)
        )
        # the target: the transfer rows of the run that crafted them, exactly
        old = before[(before["checkpoint"] == "window-70") & (before["attack"] == label)]
        new = after[(after["checkpoint"] == "window-70") & (after["attack"] == label)]
        pd.testing.assert_frame_equal(
            old[COUNTS].reset_index(drop=True), new[COUNTS].reset_index(drop=True)
        )
    # resuming the same request reuses the directory; asking for attacks as well runs them
    assert main(argv) == 0
    both = tmp_path / "both"
    assert main([*argv[:-1], str(both), "--attack", "fgsm"]) == 0
    assert {"fgsm", WORST_CASE, "fgsm from dense"} <= set(read_results(both)["attack"])


def _tampered(first: Path, tmp_path: Path, change: str) -> Path:
    src = first / "adversarials" / "dense" / "pgd@native.safetensors"
    tensors = load_file(str(src))
    with safe_open(str(src), framework="pt") as fh:
        meta = json.loads((fh.metadata() or {})[META_KEY])
    if change == "labels":
        tensors["labels"] = (tensors["labels"] + 1) % 10
    elif change == "pixels":
        tensors["adversarials"] = (tensors["adversarials"] + 0.3).clamp(0, 1)
    elif change == "dataset":
        meta["dataset"] = "mnist"
    path = tmp_path / "bad" / f"{change}.safetensors"
    path.parent.mkdir(exist_ok=True)
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta)})
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("labels", "labels differ from the digits test split"),
        ("pixels", "outside [0, 1] or their linf ball"),
        ("dataset", "made on 'mnist', but the checkpoints are evaluated on digits"),
        ("missing", "no such file or directory"),
        ("not a file of ours", "not a saved-adversarials file"),
        ("worst case alone", "--transfer-in-worst-case needs --transfer-from"),
        ("source alone", "give at least one --checkpoint besides it"),
    ],
)
def test_mistakes_exit_2_in_one_line_before_the_output_exists(
    first: Path,
    ckpts: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    message: str,
) -> None:
    dense = str(ckpts["dense"])
    out = tmp_path / "out"
    if case in ("labels", "pixels", "dataset"):
        extra = ["--checkpoint", dense, "--adversarials", str(_tampered(first, tmp_path, case))]
    elif case == "missing":
        extra = ["--checkpoint", dense, "--adversarials", str(tmp_path / "nope")]
    elif case == "not a file of ours":
        extra = ["--checkpoint", dense, "--adversarials", str(ckpts["dense"])]
    elif case == "worst case alone":
        extra = ["--checkpoint", dense, "--transfer-in-worst-case", "--attack", "fgsm"]
    else:
        extra = ["--checkpoint", dense, "--transfer-from", dense, "--attack", "fgsm"]
    capsys.readouterr()
    assert main(_attack(out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_checkpoints_with_source() -> None:
    a, b = Path("runs/a"), Path("runs/b")
    assert checkpoints_with_source([a, b], None) == ((a, b), None)
    assert checkpoints_with_source([a, b], Path("runs/../runs/b")) == ((a, b), 1)
    assert checkpoints_with_source([a], b) == ((b, a), 0)


def test_transfer_keys_leave_default_fingerprints_alone(tmp_path: Path) -> None:
    plain = AttackRunRequest(checkpoints=(tmp_path,))
    changed = [
        AttackRunRequest(checkpoints=(tmp_path,), save_adversarials=True),
        AttackRunRequest(checkpoints=(tmp_path,), adversarials=(tmp_path,), attacks=()),
        AttackRunRequest(checkpoints=(tmp_path,), transfer_from=tmp_path / "x"),
        AttackRunRequest(checkpoints=(tmp_path,), transfer_in_worst_case=True),
    ]
    assert len({plain.fingerprint(), *(r.fingerprint() for r in changed)}) == 5
    # at their defaults the keys leave the hashed payload: earlier runs keep their fingerprints
    payload = to_jsonable(plain)
    drop_default_transfer_keys(payload)
    assert not set(TRANSFER_DEFAULTS) & set(payload)
    for request in changed:
        payload = to_jsonable(request)
        drop_default_transfer_keys(payload)
        assert len(set(TRANSFER_DEFAULTS) & set(payload)) == 1


def test_config_keys_reach_the_request(tmp_path: Path) -> None:
    request = request_from_config(
        {
            "attack": {
                "checkpoints": [str(tmp_path)],
                "adversarials": str(tmp_path / "adv"),
                "transfer_from": str(tmp_path / "dense"),
                "save_adversarials": True,
                "transfer_in_worst_case": True,
            }
        }
    )
    assert request.adversarials == (tmp_path / "adv",)
    assert request.transfer_from == tmp_path / "dense"
    assert request.save_adversarials and request.transfer_in_worst_case
    assert request.attacks == ()  # saved adversarials only, unless attacks are asked
    asked = request_from_config(
        {
            "attack": {
                "checkpoints": [str(tmp_path)],
                "adversarials": [str(tmp_path)],
                "attacks": ["pgd"],
            }
        }
    )
    assert asked.attacks == ("pgd",)


# ------------------------------------------------------------------------------------- rbs run


def test_experiment_transfer_keys() -> None:
    models = ["dense", "window-70"]
    plan = experiment_transfer(
        {"transfer_from": "dense", "save_adversarials": True, "transfer_in_worst_case": True},
        models,
    )
    assert (plan.source, plan.save, plan.in_worst_case) == ("dense", True, True)
    assert experiment_transfer({}, models) == TransferPlan()
    for cfg, message in [
        ({"transfer_from": "window-90"}, "not a model of this experiment; valid: dense, window-70"),
        ({"save_adversarials": "yes"}, "save_adversarials must be true or false"),
        ({"transfer_in_worst_case": True}, "needs [attack] transfer_from"),
    ]:
        with pytest.raises(UserError, match=re.escape(message)):
            experiment_transfer(cfg, models)
    with pytest.raises(UserError, match="at least one other model"):
        experiment_transfer({"transfer_from": "dense"}, ["dense"])


def test_run_plan_records_transfer_only_when_set() -> None:
    plain = plan_experiment()
    assert "transfer" not in plain.config and plain.transfer == TransferPlan()
    same = plan_experiment(overrides={"attack": {"transfer_from": None}})
    assert same.fingerprint() == plain.fingerprint()
    plan = plan_experiment(overrides={"attack": {"transfer_from": "dense"}})
    assert plan.transfer.source == "dense" and plan.config["transfer"] == {"transfer_from": "dense"}
    assert plan.fingerprint() != plain.fingerprint()


TRANSFER_RUN = """
name = "tiny-transfer"

[data]
dataset = "digits"
train_limit = 300
test_limit = 60

[model]
arch = "small_cnn"
width = 0.25

[train]
batch_size = 32
lr = 0.05
warmup_epochs = 0.0
device = "cpu"
amp = false

[sparsity]
update_every = 2

[models]
dense = true
targets = [0.7]
granularities = ["window"]

[attack]
attacks = ["fgsm"]
batch_size = 50
transfer_from = "dense"
save_adversarials = true

[epsilons]
linf = [0, 0.05, 0.1]
"""


@pytest.mark.slow
def test_rbs_run_crafts_on_dense_and_scores_the_sparse_model(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TRANSFER_RUN)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--epochs", "1", "--limit", "40"]) == 0
    df = read_results(out / "results")
    transfer = df[df[TRANSFER_FROM] != ""]
    assert set(transfer["checkpoint"]) == {"window-70"}
    assert set(transfer["attack"]) == {"fgsm from dense"}
    assert (out / "results" / "adversarials" / "dense" / "fgsm@native.safetensors").is_file()
    assert read_sidecar(out / "results")["transfer"]["transfer_from"] == "dense"
