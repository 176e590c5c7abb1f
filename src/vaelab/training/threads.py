"""How many intra-op threads a vaelab process uses, and changing that while it trains.

Two processes that each run torch's default thread count on a 2-core machine do not share it:
an OpenMP worker waiting for its next op spins, and the other process's threads wait for the
core it spins on. Measured side by side, two runs each kept 5-15 % of their speed alone, while
with one thread each they kept 60-70 % each (benchmarks/contention.py). So vaelab takes the
CPUs it may use (affinity mask, cgroup CPU quota) less those the rest of the machine keeps busy,
and looks again every few seconds while it trains: a run started alone gives a core back when a
second one starts, and takes it again when that one ends. `--threads N` (or VAELAB_THREADS=N)
fixes the count instead.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from vaelab.errors import VaelabError

ENV = "VAELAB_THREADS"
CHECK_SECONDS = 3.0  # how often a training run looks at the machine's load again
BUSY_SHARE = 0.5  # a core the others use more than half of is theirs


def allowed_cpus() -> int:
    """CPUs this process may run on: the affinity mask, capped by a cgroup CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cgroup_quota()
    return max(1, min(cpus or 1, math.ceil(quota) if quota else cpus or 1))


def cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs' worth of the cgroup's quota (cgroup v2 cpu.max or v1 cfs_quota_us), or None."""
    try:
        text = (root / "cpu.max").read_text().split()
        if text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, IndexError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def requested_threads(flag: int | None = None) -> int | None:
    """--threads N, else VAELAB_THREADS, else None (choose from the machine)."""
    value = flag if flag is not None else os.environ.get(ENV)
    if value is None or value == "":
        return None
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        source = "--threads" if flag is not None else ENV
        raise VaelabError(f"{source} is {value!r}: expected a number of threads >= 1")
    return threads


def busy_seconds(stat: Path = Path("/proc/stat")) -> float | None:
    """CPU-seconds the whole machine has spent busy since boot (None where unknown)."""
    try:
        fields = stat.read_text().split("\n", 1)[0].split()[1:]
        ticks = [int(v) for v in fields]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    times = os.times()
    return times.user + times.system


class LoadMeter:
    """The cores the rest of the machine kept busy since the last reading (others' CPU
    seconds per wall second: the machine's busy time less this process's own)."""

    def __init__(self) -> None:
        self.last = (time.monotonic(), busy_seconds(), own_seconds())

    def others(self) -> float | None:
        now = (time.monotonic(), busy_seconds(), own_seconds())
        (t0, b0, o0), (t1, b1, o1) = self.last, now
        self.last = now
        if b0 is None or b1 is None or t1 - t0 <= 0:
            return None
        return max(0.0, ((b1 - b0) - (o1 - o0)) / (t1 - t0))


def threads_for(cpus: int, others: float | None) -> int:
    """The CPUs left by the others: a core they use more than BUSY_SHARE of is theirs."""
    if others is None:
        return cpus
    return max(1, cpus - math.floor(others + 1 - BUSY_SHARE))


class ThreadGovernor:
    """Sets torch's intra-op threads from the machine's load, again every CHECK_SECONDS when
    `step()` is called (the trainer calls it between steps), unless a count was requested."""

    def __init__(self, requested: int | None = None, cpus: int | None = None):
        self.requested, self.cpus = requested, cpus or allowed_cpus()
        self.meter, self.checked = LoadMeter(), time.monotonic()
        self.history: list[tuple[float, int]] = []  # (time, threads) at each change

    def start(self, settle: float = 0.2) -> int:
        """Measure the load over `settle` seconds and set the first thread count."""
        if self.requested is None:
            time.sleep(settle)
        return self.apply(self.requested or threads_for(self.cpus, self.meter.others()))

    def step(self) -> None:
        if self.requested is not None or time.monotonic() - self.checked < CHECK_SECONDS:
            return
        self.checked = time.monotonic()
        self.apply(threads_for(self.cpus, self.meter.others()))

    def apply(self, threads: int) -> int:
        import torch

        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
            self.history.append((time.monotonic(), threads))
        return threads
