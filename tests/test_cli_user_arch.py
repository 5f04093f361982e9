"""cli: your own architecture (``--arch package.module:Class``) through train, inspect, attack, run.

A LeNet-style class is written to a fresh module in ``tmp_path``: in-process runs put that folder
on ``sys.path``, the real-process run (slow) on ``PYTHONPATH``. The module touches a marker file
when imported, so the tests see that a checkpoint alone never imports it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from evaluations.record.results import read_results
from rbs.cli import main
from tests.core_helpers import single_thread

LENET = '''
from pathlib import Path

import torch.nn.functional as F
from torch import nn

Path(__file__).with_suffix(".imported").touch()  # evidence that this code ran


class LeNet(nn.Module):
    """LeNet-style: conv-pool-conv-pool-fc-fc, sized for 8x8 digits."""

    def __init__(self, num_classes, in_channels, width=8, hidden=32):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * 2 * 2, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (N, w, 4, 4)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (N, 2w, 2, 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))  # (N, num_classes)
'''

TRAIN = ["--train-limit", "300", "--test-limit", "100", "--batch-size", "32", "--lr", "0.05"]
TRAIN += ["--device", "cpu", "--val-fraction", "0", "--seed", "0"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    package = logging.getLogger("robustbench_sparse")
    package_level = package.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    package.setLevel(package_level)


@pytest.fixture
def lenet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``module:LeNet`` of a fresh module on ``sys.path``."""
    module = f"user_lenet_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{module}.py").write_text(LENET)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield f"{module}:LeNet"
    sys.modules.pop(module, None)


def _error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(f"rbs {command}: error: "), lines
    assert not any("Traceback" in line for line in lines)
    return lines[-1]


@pytest.mark.parametrize("method", ["campfire", "filter"])
def test_train_inspect_attack_in_process(
    lenet: str, tmp_path: Path, method: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module = lenet.split(":")[0]
    ck = tmp_path / "ck"
    argv = ["-q", "train", "--out", str(ck), "--arch", lenet, "--arch-kwargs", "width=6"]
    argv += ["--epochs", "2", "--sparsity", "0.5", "--method", method, *TRAIN]
    assert main(argv) == 0
    meta = json.loads((ck / "checkpoint.json").read_text())
    assert meta["arch"] == lenet and meta["arch_kwargs"] == {"width": 6}
    assert meta["arch_source"]["file"] == str((tmp_path / f"{module}.py").resolve())
    capsys.readouterr()

    # Inspect: the layers of the user's class are found and pruned like a registry model's.
    assert main(["inspect", str(ck), "--json", "--arch", lenet]) == 0
    report = json.loads(capsys.readouterr().out)["sparsity_report"]
    layers = {row["name"]: row for row in report["layers"]}
    assert set(layers) == {f"net.{n}.weight" for n in ("conv1", "conv2", "fc1", "fc2")}
    pruned = {name for name, row in layers.items() if row["pruned"]}
    assert pruned and "net.conv1.weight" not in pruned and "net.fc2.weight" not in pruned
    assert all(layers[name]["achieved"] > 0.4 for name in pruned)
    assert report["achieved_pruned"] == pytest.approx(0.5, abs=0.05)

    out = tmp_path / "attacked"
    attack = ["attack", "--checkpoint", str(ck), "--arch", lenet, "--attack", "fgsm"]
    attack += ["--eps", "0,0.1", "--limit", "20", "--no-report", "--out", str(out)]
    assert main(attack) == 0
    df = read_results(out)
    assert set(df["arch"]) == {lenet} and (df["n"] == 20).all()


def test_loading_without_naming_the_class_refuses_and_imports_nothing(
    lenet: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = lenet.split(":")[0]
    ck = tmp_path / "ck"
    argv = ["-q", "train", "--out", str(ck), "--arch", lenet, "--epochs", "1", *TRAIN]
    assert main(argv) == 0
    sys.modules.pop(module)
    (tmp_path / f"{module}.imported").unlink()
    capsys.readouterr()
    out = tmp_path / "r"
    for argv in (
        ["inspect", str(ck)],
        ["attack", "--checkpoint", str(ck), "--attack", "fgsm", "--out", str(out)],
        ["inspect", str(ck), "--arch", "small_cnn"],
    ):
        assert main(argv) == 2
        message = _error(capsys, argv[0])
        assert f"pass --arch {lenet} (or --trust-arch) if you trust it" in message
        assert module not in sys.modules and not (tmp_path / f"{module}.imported").exists()
    assert not out.exists()
    assert main(["inspect", str(ck), "--trust-arch"]) == 0
    assert (tmp_path / f"{module}.imported").exists()


def test_config_kwargs_table_and_plain_state_dict(
    lenet: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    config = tmp_path / "lenet.toml"
    config.write_text(f'[model]\narch = "{lenet}"\nkwargs = {{width = 5, hidden = 16}}\n')
    ck = tmp_path / "ck"
    argv = ["-q", "train", "--config", str(config), "--out", str(ck), "--epochs", "1", *TRAIN]
    assert main(argv) == 0
    capsys.readouterr()
    meta = json.loads((ck / "checkpoint.json").read_text())
    assert meta["arch_kwargs"] == {"width": 5, "hidden": 16}

    # Its weights as a bare state dict: --arch and --arch-kwargs rebuild it.
    from safetensors.torch import load_file

    saved = load_file(str(ck / "checkpoint.safetensors"))
    torch.save({k[4:]: v for k, v in saved.items() if k.startswith("net.")}, tmp_path / "lenet.pt")
    base = ["inspect", str(tmp_path / "lenet.pt"), "--arch", lenet, "--dataset", "digits", "--json"]
    assert main([*base, "--arch-kwargs", "width=5,hidden=16"]) == 0
    assert json.loads(capsys.readouterr().out)["arch"] == lenet
    assert main([*base, "--arch-kwargs", "width=6,hidden=16"]) == 2
    assert "has shape (5, 1, 3, 3)" in _error(capsys, "inspect")


@pytest.mark.parametrize(
    ("arch", "kwargs", "expected"),
    [
        (
            "no_such_pkg_xyz.nets:LeNet",
            None,
            "no module named 'no_such_pkg_xyz' on the Python path",
        ),
        ("{module}:LeNett", None, "has no 'LeNett'; it defines LeNet"),
        ("{module}:LeNet", "widht=3", "unexpected keyword argument 'widht'"),
        ("{module}:LeNet", "num_classes=3", "'num_classes' comes from the dataset"),
        ("{module}:LeNet", "width", "expected KEY=VALUE"),
    ],
)
def test_train_errors_are_one_line_and_leave_nothing(
    lenet: str,
    tmp_path: Path,
    arch: str,
    kwargs: str | None,
    expected: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "never"
    argv = ["train", "--out", str(out), "--arch", arch.format(module=lenet.split(":")[0])]
    argv += ["--arch-kwargs", kwargs] if kwargs else []
    assert main([*argv, "--epochs", "1", *TRAIN]) == 2
    assert expected in _error(capsys, "train")
    assert not out.exists()


def test_rbs_run_plans_the_user_class(lenet: str) -> None:
    from rbs.commands.run import ALIASES
    from rbs.overrides import command_line_layer
    from rbs.run_job import RUN_SCHEMA, default_config, plan_experiment
    from robustbench_sparse.config import deep_merge

    args = type("Args", (), {"set_values": [], "arch": lenet, "arch_kwargs": "width=4"})()
    layer = command_line_layer(args, ALIASES, RUN_SCHEMA)  # type: ignore[arg-type]
    plan = plan_experiment(deep_merge(default_config(), layer))
    assert {m.job.arch for m in plan.models} == {lenet}
    assert {dict(m.job.arch_kwargs)["width"] for m in plan.models} == {4}


@pytest.mark.slow
def test_real_processes_on_pythonpath(tmp_path: Path) -> None:
    """The acceptance run: train, inspect and attack in real processes, the module on PYTHONPATH."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "my_lenet.py").write_text(LENET)
    work = tmp_path / "work"  # not the module's folder: only PYTHONPATH finds it
    work.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([str(code), repo])

    def rbs(*argv: str, pythonpath: bool = True) -> subprocess.CompletedProcess[str]:
        run_env = env if pythonpath else {**env, "PYTHONPATH": repo}
        return subprocess.run(
            [sys.executable, "-m", "rbs", *argv],
            cwd=work,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    train = rbs("-q", "train", "--out", "ck", "--arch", "my_lenet:LeNet", "--epochs", "5",
                "--sparsity", "0.5", "--train-limit", "600", *TRAIN[2:])  # fmt: skip
    assert train.returncode == 0, train.stderr
    accuracy = json.loads((work / "ck" / "checkpoint.json").read_text())["clean_accuracy"]
    assert accuracy > 0.5  # it learns (chance is 0.1)
    inspect = rbs("inspect", "ck", "--arch", "my_lenet:LeNet")
    assert inspect.returncode == 0 and "net.fc1.weight" in inspect.stdout, inspect.stderr
    attack = rbs("-q", "attack", "--checkpoint", "ck", "--arch", "my_lenet:LeNet", "--attack",
                 "fgsm", "--eps", "0,0.1", "--limit", "50", "--no-report", "--out", "res")  # fmt: skip
    assert attack.returncode == 0, attack.stderr
    df = read_results(work / "res")
    clean = df[(df.attack == "fgsm") & (df.epsilon == 0)]
    assert len(clean) == 1 and int(clean["clean_correct"].iloc[0]) > 25
    (code / "my_lenet.imported").unlink()
    refused = rbs("inspect", "ck")
    assert refused.returncode == 2
    assert "pass --arch my_lenet:LeNet (or --trust-arch)" in refused.stderr
    assert not (code / "my_lenet.imported").exists()  # the module never ran
    missing = rbs("inspect", "ck", "--arch", "my_lenet:LeNet", pythonpath=False)
    assert (
        missing.returncode == 2 and "add the folder that holds it to PYTHONPATH" in missing.stderr
    )
