"""How many CPU threads torch should use, chosen so a shared machine does not collapse.

torch's default intra-op thread count is the number of cores it can see. On a machine where another
process is busy, those threads wait on each other at every parallel region (OpenMP barriers): on a
loaded 2-core box a training step of the default job took 1.8-2.5 s with 2 threads instead of 0.23 s
with 1 (see BENCHMARKS.md, "Threads under contention"). The policy here:

1. ``--threads N`` (the CLI flag) wins;
2. else the environment variable ``RBS_THREADS``;
3. else, when ``OMP_NUM_THREADS`` is set, torch's own choice (the user already decided);
4. else ``max(1, usable // 2)``, where ``usable`` is the number of CPUs this process may run on:
   the CPU affinity mask (``os.sched_getaffinity``), capped by the cgroup CPU quota (cgroup v2
   ``cpu.max`` or v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``), rounded up. Half leaves room for a
   neighbour; on 2 cores it is 1 thread, which the benchmark shows is the one setting that keeps its
   speed under contention.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path

from robustbench_sparse.errors import UserError

__all__ = ["ENV_VAR", "apply_threads", "cgroup_cpu_limit", "choose_threads", "usable_cpus"]

logger = logging.getLogger(__name__)

ENV_VAR = "RBS_THREADS"
_CGROUP_ROOT = Path("/sys/fs/cgroup")


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
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


def choose_threads(flag: int | None = None, environ: dict[str, str] | None = None) -> int | None:
    """The intra-op thread count to use (``None``: leave torch's choice, OMP_NUM_THREADS is set).

    Precedence: ``flag`` > ``RBS_THREADS`` > ``OMP_NUM_THREADS`` (torch's choice) > half the
    usable CPUs (at least 1). Raises :class:`UserError` for a flag or ``RBS_THREADS`` value that is
    not a positive integer.
    """
    env = os.environ if environ is None else environ
    if flag is not None:
        if flag < 1:
            raise UserError(f"--threads must be a positive integer, got {flag}")
        return flag
    raw = env.get(ENV_VAR, "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise UserError(f"{ENV_VAR} must be a positive integer, got {raw!r}")
        return value
    if env.get("OMP_NUM_THREADS", "").strip():
        return None
    return max(1, usable_cpus() // 2)


def apply_threads(flag: int | None = None) -> int:
    """Choose (see :func:`choose_threads`) and set torch's intra-op threads; return the count used.

    Inter-op threads are set to 1 as well when torch still allows it (before any parallel work):
    this code runs no concurrent graph branches, so extra inter-op threads only compete for cores.
    """
    import torch

    n = choose_threads(flag)
    if n is not None:
        torch.set_num_threads(n)
        with contextlib.suppress(RuntimeError):  # parallel work already started: harmless
            torch.set_num_interop_threads(1)
    used = torch.get_num_threads()
    logger.debug("torch uses %d intra-op thread(s) (%d usable CPUs)", used, usable_cpus())
    return used
