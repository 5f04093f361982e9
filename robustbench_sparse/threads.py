"""How many CPU threads torch should use: all cores on a quiet machine, half when others are busy.

torch's default intra-op thread count is the number of cores it can see. On a machine where another
process is busy, those threads wait on each other at every parallel region (OpenMP barriers): on a
loaded 2-core box a training step of the default job took 1.8-2.5 s with 2 threads instead of 0.23 s
with 1 (see BENCHMARKS.md, "Threads under contention"). On a quiet 2-core box the same 2 threads
make an attack grid 1.6x faster than 1. The policy here:

1. ``--threads N`` (the CLI flag) wins;
2. else the environment variable ``RBS_THREADS``;
3. else, when ``OMP_NUM_THREADS`` is set, torch's own choice (the user already decided);
4. else **automatic**: ``usable`` is the number of CPUs this process may run on (the CPU affinity
   mask, capped by the cgroup CPU quota (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us /
   cpu.cfs_period_us``), rounded up). When other processes use less than :data:`QUIET_BELOW` CPUs
   (measured from ``/proc/stat`` on the affinity CPUs, minus this process and its children, since
   this module was imported), all ``usable`` threads; else ``max(1, usable // 2)``, which leaves
   room for the neighbour. :func:`rebalance`, called between attack cells and training epochs,
   repeats the measurement over the time since the last call and moves between the two counts
   (down as soon as a neighbour appears, up after it has been gone for a whole interval). Where
   ``/proc/stat`` cannot be read (not Linux), half the usable CPUs, fixed.

Results are bit-identical only at the same thread count: pass ``--threads`` (or ``RBS_THREADS``)
to fix it. Every count a run used is recorded (:func:`threads_record`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustbench_sparse.errors import UserError

__all__ = [
    "ENV_VAR",
    "QUIET_BELOW",
    "apply_threads",
    "cgroup_cpu_limit",
    "choose_threads",
    "others_cpus",
    "rebalance",
    "threads_record",
    "usable_cpus",
]

logger = logging.getLogger(__name__)

ENV_VAR = "RBS_THREADS"
QUIET_BELOW = 0.5  # CPUs' worth of other processes' work under which the machine counts as quiet
REBALANCE_EVERY = 2.0  # seconds: shorter intervals are too noisy to measure a neighbour
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC = Path("/proc")


def cgroup_cpu_limit(root: Path = _CGROUP_ROOT) -> float | None:
    """The cgroup CPU quota in CPUs (e.g. 1.5), or ``None`` when unlimited or unreadable.

    Reads cgroup v2 ``<root>/cpu.max`` (``"max 100000"`` or ``"150000 100000"``), else cgroup v1
    ``<root>/cpu/cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` (quota ``-1`` = unlimited).
    """
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, _, period = v2.read_text().strip().partition(" ")
            if quota == "max":
                return None
            return int(quota) / int(period or "100000")
        v1 = root / "cpu"
        q, p = v1 / "cpu.cfs_quota_us", v1 / "cpu.cfs_period_us"
        if q.is_file() and p.is_file():
            quota_us, period_us = int(q.read_text().strip()), int(p.read_text().strip())
            if quota_us <= 0 or period_us <= 0:
                return None
            return quota_us / period_us
    except (OSError, ValueError):
        return None
    return None


def usable_cpus(root: Path = _CGROUP_ROOT) -> int:
    """CPUs this process may use: the affinity mask, capped by the cgroup quota (rounded up)."""
    cpus = len(_affinity())
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


@dataclass
class CpuSample:
    """One reading: busy seconds of the affinity CPUs, this process tree's CPU seconds, wall clock."""

    busy: float
    own: float
    wall: float


def _clock_ticks() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100


def _busy_seconds(proc: Path, cpus: set[int]) -> float | None:
    """Busy (non-idle, non-iowait) seconds of the CPUs in ``cpus`` since boot, from ``/proc/stat``."""
    try:
        lines = (proc / "stat").read_text().splitlines()
    except OSError:
        return None
    ticks = 0
    found = False
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            index = int(name[3:])
            values = [int(v) for v in rest.split()]
        except ValueError:
            continue
        if index not in cpus or len(values) < 5:
            continue
        # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is
        # already inside user, so only the first eight count
        ticks += sum(values[:8]) - values[3] - values[4]
        found = True
    return ticks / _clock_ticks() if found else None


def _children_seconds(proc: Path) -> float:
    """CPU seconds of this process's children: live ones from ``/proc``, plus those reaped."""
    me = os.getpid()
    total = 0.0
    try:
        entries = [p for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        entries = []
    for entry in entries:
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) "
        if len(fields) > 12 and fields[1] == str(me):  # ppid
            total += (int(fields[11]) + int(fields[12])) / _clock_ticks()  # utime + stime
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return total + reaped.ru_utime + reaped.ru_stime


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def cpu_sample(proc: Path = _PROC) -> CpuSample | None:
    """A reading for :func:`others_cpus`; ``None`` where ``/proc/stat`` cannot be read."""
    busy = _busy_seconds(proc, _affinity())
    if busy is None:
        return None
    own = sum(os.times()[:2]) + _children_seconds(proc)
    return CpuSample(busy, own, time.monotonic())


def others_cpus(before: CpuSample, after: CpuSample) -> float:
    """CPUs' worth of work done by other processes between two readings (0 where none elapsed)."""
    wall = after.wall - before.wall
    if wall <= 0:
        return 0.0
    return max(0.0, ((after.busy - before.busy) - (after.own - before.own)) / wall)


@dataclass
class _Auto:
    """The automatic choice's state: the last reading and the counts used so far."""

    usable: int
    current: int
    last: CpuSample
    seen: list[int] = field(default_factory=list)


_START = cpu_sample()  # imports (torch's included) run between this and apply_threads: the sample
_auto: _Auto | None = None
_policy = "torch"  # flag | RBS_THREADS | OMP_NUM_THREADS | auto | auto-fixed | torch


def _auto_count(usable: int, others: float | None) -> int:
    """All usable CPUs on a quiet machine, half (at least 1) when others are busy or unknown."""
    half = max(1, usable // 2)
    return usable if others is not None and others < QUIET_BELOW else half


def _fixed_choice(flag: int | None, env: Mapping[str, str]) -> tuple[str, int | None] | None:
    """``(policy, count)`` where the user fixed the count (``None`` count: torch's choice under
    ``OMP_NUM_THREADS``); ``None`` when the choice is automatic. The one place of the precedence."""
    if flag is not None:
        if flag < 1:
            raise UserError(f"--threads must be a positive integer, got {flag}")
        return "flag", flag
    raw = env.get(ENV_VAR, "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise UserError(f"{ENV_VAR} must be a positive integer, got {raw!r}")
        return ENV_VAR, value
    if env.get("OMP_NUM_THREADS", "").strip():
        return "OMP_NUM_THREADS", None
    return None


def choose_threads(
    flag: int | None = None,
    environ: dict[str, str] | None = None,
    others: float | None = None,
) -> int | None:
    """The intra-op thread count to use (``None``: leave torch's choice, OMP_NUM_THREADS is set).

    Precedence: ``flag`` > ``RBS_THREADS`` > ``OMP_NUM_THREADS`` (torch's choice) > automatic:
    all usable CPUs when ``others`` (CPUs' worth of other processes' work, see
    :func:`others_cpus`) is below :data:`QUIET_BELOW`, else half the usable CPUs (at least 1);
    ``others=None`` (unmeasured) gives half. Raises :class:`UserError` for a flag or
    ``RBS_THREADS`` value that is not a positive integer.
    """
    fixed = _fixed_choice(flag, os.environ if environ is None else environ)
    return fixed[1] if fixed is not None else _auto_count(usable_cpus(), others)


def apply_threads(flag: int | None = None) -> int:
    """Choose (see :func:`choose_threads`) and set torch's intra-op threads; return the count used.

    Inter-op threads are set to 1 as well when torch still allows it (before any parallel work):
    this code runs no concurrent graph branches, so extra inter-op threads only compete for cores.
    Under the automatic policy the machine is measured first: from this module's import (a CLI
    start-up, at least 0.1 s) to now.
    """
    global _auto, _policy
    import torch

    fixed = _fixed_choice(flag, os.environ)
    policy = fixed[0] if fixed is not None else "auto"
    others: float | None = None
    now: CpuSample | None = None
    if policy == "auto" and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        policy = "auto-fixed"  # ranks of one job would count each other as neighbours
    if policy == "auto":
        start = _START or cpu_sample()
        if start is not None and time.monotonic() - start.wall < 0.1:
            time.sleep(0.1 - (time.monotonic() - start.wall))
        now = cpu_sample()
        if start is not None and now is not None:
            others = others_cpus(start, now)
    n = fixed[1] if fixed is not None else _auto_count(usable_cpus(), others)
    if n is not None:
        torch.set_num_threads(n)
        with contextlib.suppress(RuntimeError):  # parallel work already started: harmless
            torch.set_num_interop_threads(1)
    used = torch.get_num_threads()
    _auto = None
    _policy = policy
    if policy == "auto" and now is not None and others is not None:
        _auto = _Auto(usable_cpus(), used, now, [used])
        logger.debug("other processes use %.2f CPUs: %d thread(s)", others, used)
    elif policy == "auto":
        _policy = "auto-fixed"  # no /proc/stat: half the usable CPUs, never rebalanced
    logger.debug("torch uses %d intra-op thread(s) (%d usable CPUs)", used, usable_cpus())
    return used


def rebalance() -> int:
    """Under the automatic policy, re-measure the machine and move between the two thread counts.

    Call between units of work (attack cells, training epochs). A no-op (returns torch's current
    count) under a fixed policy, or when less than :data:`REBALANCE_EVERY` seconds passed since the
    last reading. Goes to half the usable CPUs as soon as other processes use
    :data:`QUIET_BELOW` CPUs or more, and back to all of them once a whole interval was quiet.
    """
    import torch

    state = _auto
    if state is None:
        return torch.get_num_threads()
    now = cpu_sample()
    if now is None or now.wall - state.last.wall < REBALANCE_EVERY:
        return state.current
    others = others_cpus(state.last, now)
    state.last = now
    target = _auto_count(state.usable, others)
    if target != state.current:
        logger.info(
            "other processes use %.1f CPUs: torch threads %d -> %d (--threads N fixes the count)",
            others,
            state.current,
            target,
        )
        torch.set_num_threads(target)
        state.current = target
        if target not in state.seen:
            state.seen.append(target)
    return state.current


def threads_record() -> dict[str, Any]:
    """For a run's record: the policy (``flag``, ``RBS_THREADS``, ``OMP_NUM_THREADS``, ``auto``,
    ``auto-fixed`` or ``torch`` when :func:`apply_threads` never ran) and every count used."""
    import torch

    counts = list(_auto.seen) if _auto is not None else [torch.get_num_threads()]
    return {"policy": _policy, "counts": sorted(set(counts))}
