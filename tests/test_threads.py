"""threads: the thread-count policy (flag > RBS_THREADS > OMP_NUM_THREADS > automatic: all usable
CPUs on a quiet machine, half when other processes are busy, rebalanced between units of work)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from rbs.cli import main
from robustbench_sparse import threads
from robustbench_sparse.errors import UserError
from robustbench_sparse.threads import apply_threads, cgroup_cpu_limit, choose_threads, usable_cpus


def test_flag_beats_environment() -> None:
    assert choose_threads(3, {"RBS_THREADS": "2", "OMP_NUM_THREADS": "4"}) == 3
    assert choose_threads(None, {"RBS_THREADS": "2", "OMP_NUM_THREADS": "4"}) == 2


def test_omp_num_threads_leaves_torch_choice() -> None:
    assert choose_threads(None, {"OMP_NUM_THREADS": "4"}) is None


def test_automatic_is_all_cpus_when_quiet_and_half_when_busy_or_unknown() -> None:
    usable = usable_cpus()
    assert usable <= len(os.sched_getaffinity(0))
    assert choose_threads(None, {}, others=0.0) == usable
    assert choose_threads(None, {}, others=threads.QUIET_BELOW - 0.01) == usable
    assert choose_threads(None, {}, others=threads.QUIET_BELOW) == max(1, usable // 2)
    assert choose_threads(None, {}, others=1.0) == max(1, usable // 2)
    assert choose_threads(None, {}, others=None) == max(1, usable // 2)  # not measured


def _proc(tmp_path: Path, busy: dict[int, int], idle: int = 1000) -> Path:
    """A fake /proc with a ``stat`` file: per-CPU busy ticks (user) and idle ticks."""
    lines = ["cpu  1 2 3 4 5 6 7 8 0 0"]  # the aggregate line, ignored
    lines += [f"cpu{i} {b} 0 0 {idle} 7 0 0 0 50 0" for i, b in busy.items()]
    (tmp_path / "stat").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_busy_seconds_sum_the_affinity_cpus_without_idle_iowait_or_guest(tmp_path: Path) -> None:
    proc = _proc(tmp_path, {0: 100, 1: 300, 2: 5000})
    hz = threads._clock_ticks()
    # cpu2 is outside the affinity set; iowait (7) is idle; guest (50) is inside user already
    assert threads._busy_seconds(proc, {0, 1}) == pytest.approx(400 / hz)
    assert threads._busy_seconds(proc, {3}) is None  # none of the affinity CPUs listed
    assert threads._busy_seconds(tmp_path / "missing", {0}) is None


def test_others_cpus_subtract_this_process_tree() -> None:
    before = threads.CpuSample(busy=10.0, own=1.0, wall=100.0)
    # 2 s of wall time: 3 busy CPU-seconds, 1 of them ours -> others used 1 CPU
    assert threads.others_cpus(before, threads.CpuSample(13.0, 2.0, 102.0)) == pytest.approx(1.0)
    assert threads.others_cpus(before, threads.CpuSample(11.0, 2.0, 102.0)) == 0.0  # never < 0
    assert threads.others_cpus(before, before) == 0.0


SPIN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass"


def _window(seconds: float) -> tuple[threads.CpuSample, threads.CpuSample]:
    import time

    time.sleep(0.3)  # the spinner's interpreter has started
    start = threads.cpu_sample()
    time.sleep(seconds)
    end = threads.cpu_sample()
    if start is None or end is None:
        pytest.skip("no /proc/stat on this platform")
    return start, end


def test_a_live_child_counts_as_this_process() -> None:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", SPIN])
    start, end = _window(0.4)
    child.wait()
    assert end.own - start.own >= 0.25  # the child's CPU time, read from /proc while it ran
    reaped = threads.cpu_sample()
    assert reaped is not None and reaped.own >= end.own  # and kept once reaped


def test_an_unrelated_process_counts_as_a_neighbour(tmp_path: Path) -> None:
    """A spinner whose parent (a shell) exits at once is not our child: it is another process."""
    import shlex
    import subprocess
    import sys

    script = tmp_path / "spin.py"
    script.write_text(SPIN)
    line = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} >/dev/null 2>&1 &"
    subprocess.run(["sh", "-c", line], check=True)
    start, end = _window(0.4)
    assert threads.others_cpus(start, end) >= threads.QUIET_BELOW


def test_rebalance_follows_the_neighbour(monkeypatch: pytest.MonkeyPatch) -> None:
    """Automatic policy: down to half when others are busy, back up after a quiet interval."""
    readings = iter(
        [
            threads.CpuSample(0.0, 0.0, 0.0),  # start
            threads.CpuSample(0.2, 0.2, 1.0),  # apply: quiet -> all
            threads.CpuSample(4.2, 2.2, 3.0),  # others 1 CPU for 2 s -> half
            threads.CpuSample(4.3, 2.3, 3.5),  # too soon (< REBALANCE_EVERY): no reading
            threads.CpuSample(6.3, 4.3, 5.5),  # quiet for 2.5 s -> all again
        ]
    )
    monkeypatch.setattr(threads, "_START", None)
    monkeypatch.setattr(threads, "cpu_sample", lambda proc=None: next(readings))
    monkeypatch.setattr(threads, "usable_cpus", lambda root=None: 4)
    for key in ("RBS_THREADS", "OMP_NUM_THREADS", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    before = torch.get_num_threads()
    try:
        assert apply_threads() == 4
        assert threads.rebalance() == 2 and torch.get_num_threads() == 2
        assert threads.rebalance() == 2  # too soon to measure
        assert threads.rebalance() == 4 and torch.get_num_threads() == 4
        assert threads.threads_record() == {"policy": "auto", "counts": [2, 4]}
    finally:
        torch.set_num_threads(before)
        apply_threads(before)  # leaves a fixed policy: later rebalance() calls are no-ops


def test_fixed_policies_never_rebalance(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        apply_threads(1)
        monkeypatch.setattr(threads, "cpu_sample", lambda proc=None: pytest.fail("measured"))
        assert threads.rebalance() == 1
        assert threads.threads_record() == {"policy": "flag", "counts": [1]}
        monkeypatch.setenv("WORLD_SIZE", "2")  # ranks of one torchrun job: half, fixed
        for key in ("RBS_THREADS", "OMP_NUM_THREADS"):
            monkeypatch.delenv(key, raising=False)
        apply_threads()
        assert threads.threads_record()["policy"] == "auto-fixed"
        assert torch.get_num_threads() == max(1, usable_cpus() // 2)
        assert threads.rebalance() == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
        apply_threads(before)


def test_no_proc_stat_gives_half_fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "_START", None)
    monkeypatch.setattr(threads, "cpu_sample", lambda proc=None: None)
    for key in ("RBS_THREADS", "OMP_NUM_THREADS", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    before = torch.get_num_threads()
    try:
        assert apply_threads() == max(1, usable_cpus() // 2)
        assert threads.threads_record()["policy"] == "auto-fixed"
    finally:
        torch.set_num_threads(before)
        apply_threads(before)


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
