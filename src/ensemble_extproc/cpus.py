"""How many processor and upstream processes ``run`` starts by default: one per usable CPU.

Both are single-threaded Python servers (one event loop each), CPU-bound under load, so
one process can use at most one core: more cores need more processes. More processes
than cores only add context switches (bench/RESULTS.md, "Scale-out": on 2 cores, 3 and 4
processor processes served fewer requests than 2). "Usable" is what this process may run
on: its CPU affinity (taskset, a container's cpuset), capped by a cgroup CPU quota (a
container's CPU limit), rounded up.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

# cgroup v2, then v1: where a container's CPU limit shows.
CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def quota_cpus(v2_max: str | None, v1_quota: str | None, v1_period: str | None) -> float | None:
    """The CPU limit in CPUs from the cgroup files' contents; None when there is none.

    v2 ``cpu.max`` is ``"<quota> <period>"`` or ``"max <period>"``; v1 has a quota of -1
    when unlimited."""
    if v2_max is not None:
        quota, _, period = v2_max.strip().partition(" ")
        if quota != "max" and quota.isdigit() and period.strip().isdigit():
            return int(quota) / int(period)
        return None
    if v1_quota is not None and v1_period is not None:
        quota_us, period_us = int(v1_quota), int(v1_period)
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def usable_cpus() -> int:
    count = len(os.sched_getaffinity(0))
    quota = quota_cpus(_read(CGROUP_V2_MAX), _read(CGROUP_V1_QUOTA), _read(CGROUP_V1_PERIOD))
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return count
