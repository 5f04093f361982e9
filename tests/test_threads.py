"""threads: the thread-count policy (flag > RBS_THREADS > OMP_NUM_THREADS > half the usable CPUs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from rbs.cli import main
from robustbench_sparse.errors import UserError
from robustbench_sparse.threads import apply_threads, cgroup_cpu_limit, choose_threads, usable_cpus


def test_flag_beats_environment() -> None:
    assert choose_threads(3, {"RBS_THREADS": "2", "OMP_NUM_THREADS": "4"}) == 3
    assert choose_threads(None, {"RBS_THREADS": "2", "OMP_NUM_THREADS": "4"}) == 2


def test_omp_num_threads_leaves_torch_choice() -> None:
    assert choose_threads(None, {"OMP_NUM_THREADS": "4"}) is None


def test_default_is_half_the_usable_cpus_at_least_one() -> None:
    assert choose_threads(None, {}) == max(1, usable_cpus() // 2)
    assert usable_cpus() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_bad_environment_value_is_a_user_error(bad: str) -> None:
    with pytest.raises(UserError, match="RBS_THREADS must be a positive integer"):
        choose_threads(None, {"RBS_THREADS": bad})


def test_bad_flag_is_a_user_error() -> None:
    with pytest.raises(UserError, match="--threads must be a positive integer"):
        choose_threads(0, {})


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
        ({"cpu.max": "garbage\n"}, None),
        ({}, None),
    ],
)
def test_cgroup_quota(tmp_path: Path, files: dict[str, str], expected: float | None) -> None:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert cgroup_cpu_limit(tmp_path) == expected
    if expected is not None:
        assert usable_cpus(tmp_path) <= max(1, int(expected + 0.999))


def test_apply_threads_sets_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_cli_threads_flag_and_bad_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = torch.get_num_threads()
    try:
        assert main(["models", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
        assert main(["models", "--threads", "0"]) == 2
        assert "--threads must be a positive integer" in capsys.readouterr().err
        monkeypatch.setenv("RBS_THREADS", "x")
        assert main(["models"]) == 2
        assert "RBS_THREADS must be a positive integer" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
