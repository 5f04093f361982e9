"""SIGKILL ``rbs run`` during training, the attack grid and report writing; ``--resume`` finishes.

One uninterrupted run (A) is the reference. Run B is killed three times, each kill landing in a
later phase, and resumed after each; the final results table must equal A's (apart from the
wall-time column) with no duplicated or missing rows, and every checkpoint must be byte-identical.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
IDENTITY = ["checkpoint", "attack", "backend", "norm", "epsilon"]
TIMING = ["seconds"]

TINY_RUN = """
name = "tiny"

[data]
dataset = "digits"
train_limit = 300
test_limit = 60

[model]
arch = "small_cnn"
width = 0.25

[train]
epochs = 3
batch_size = 32
lr = 0.05
warmup_epochs = 0.0
device = "cpu"
amp = false
seed = 0

[sparsity]
update_every = 2

[models]
dense = true
targets = [0.7]
granularities = ["window"]

[attack]
attacks = ["fgsm", "pgd", "cw"]
batch_size = 50
limit = 40

[attack.params.pgd]
steps = 5

[attack.params.cw]
steps = 20
binary_search_steps = 3
"""


def rbs_run_argv(cfg: Path, out: Path) -> list[str]:
    """The command under test (``-q``: no progress bars in the logs)."""
    return [sys.executable, "-m", "rbs", "-q", "run", str(cfg), "--out", str(out)]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_to_completion(cfg: Path, out: Path, log: Path, *extra: str) -> None:
    with log.open("a") as fh:
        proc = subprocess.run(
            [*rbs_run_argv(cfg, out), *extra],
            cwd=REPO,
            env=env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    assert proc.returncode == 0, log.read_text()[-3000:]


def kill_when(
    cfg: Path, out: Path, log: Path, ready: Callable[[], bool], *extra: str, timeout: float = 120
) -> None:
    """Start ``rbs run``, SIGKILL it as soon as ``ready()`` holds (polled every 2 ms)."""
    with log.open("a") as fh:
        proc = subprocess.Popen(
            [*rbs_run_argv(cfg, out), *extra],
            cwd=REPO,
            env=env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + timeout
            while not ready():
                if proc.poll() is not None:
                    pytest.fail(f"rbs run exited ({proc.returncode}) before the kill point")
                if time.monotonic() > deadline:
                    pytest.fail("the kill point was never reached")
                time.sleep(0.002)
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _training(out: Path) -> bool:
    ckpts = out / "checkpoints"
    return any(ckpts.glob("*/train_state.pt")) or any(
        '"kind": "last"' in p.read_text(errors="replace") for p in ckpts.glob("*/checkpoint.json")
    )


def _attacking(out: Path) -> bool:
    res = out / "results"
    return any((res / "cells").glob("*/*.json")) and not (res / "results.json").exists()


def _reporting(out: Path) -> bool:
    res = out / "results"
    return ((res / "figures").exists() or (res / "results.json").exists()) and not (
        res / "report.html"
    ).exists()


def read_table(out: Path) -> pd.DataFrame:
    df = pd.read_csv(out / "results" / "results.csv")
    return df.drop(columns=TIMING).sort_values(IDENTITY).reset_index(drop=True)


def checkpoint_files(out: Path) -> dict[str, bytes]:
    root = out / "checkpoints"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.safetensors"))}


def assert_same_run(a: Path, b: Path) -> None:
    """Equal results tables (but wall time) without duplicates, byte-identical checkpoints."""
    ta, tb = read_table(a), read_table(b)
    assert not tb.duplicated(IDENTITY).any(), tb[tb.duplicated(IDENTITY, keep=False)]
    assert len(ta) == len(tb)
    pd.testing.assert_frame_equal(ta, tb, check_exact=True)
    fa, fb = checkpoint_files(a), checkpoint_files(b)
    assert sorted(fa) == sorted(fb) and len(fa) >= 2
    for name in fa:
        assert fa[name] == fb[name], f"{name} differs"


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sigkill_at_every_phase_then_resume_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_RUN)
    log = tmp_path / "rbs.log"
    a, b = tmp_path / "A", tmp_path / "B"
    run_to_completion(cfg, a, log)
    expected_rows = len(pd.read_csv(a / "results" / "results.csv"))
    assert expected_rows == 2 * (3 + 2) * 6  # 2 models x (3 attacks + 2 worst cases) x 6 eps

    # 1. During training: after the first epoch's state is saved, before any attack ran.
    kill_when(cfg, b, log, lambda: _training(b))
    assert not (b / "results").exists()

    # 2. During the attack grid: some cells finished, the sidecar not yet written.
    kill_when(cfg, b, log, lambda: _attacking(b), "--resume")
    assert not (b / "results" / "results.json").exists()
    partial = (
        pd.read_csv(b / "results" / "results.csv")
        if (b / "results" / "results.csv").exists()
        else None
    )
    assert partial is None or len(partial) < expected_rows

    # 3. While figures and the report are written.
    kill_when(cfg, b, log, lambda: _reporting(b), "--resume")
    assert not (b / "results" / "report.html").exists()

    # 4. Resume to the end.
    run_to_completion(cfg, b, log, "--resume")
    assert (b / "results" / "report.html").is_file()
    assert_same_run(a, b)
