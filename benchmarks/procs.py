"""CPU time and memory of one process tree, read from ``/proc`` (Linux).

The benchmark runs the gateway, the test OP, the store and the bare Tornado server as
separate processes so that each one's CPU is its own: ``utime + stime`` of every live
process in the tree, plus ``cutime + cstime`` (children already waited for).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def tree(root: int) -> list[int]:
    """``root`` and its descendants alive now (a worker, a forked store)."""
    parents: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def cpu_seconds(root: int) -> float:
    """User + system CPU of the tree so far (children reaped included)."""
    ticks = 0
    for pid in tree(root):
        fields = _stat_fields(pid)
        if fields is not None:  # fields[11..14]: utime, stime, cutime, cstime
            ticks += sum(int(x) for x in fields[11:15])
    return ticks / CLOCK_TICKS


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class Memory:
    rss_mib: float  # resident now (VmRSS, summed over the tree)
    peak_mib: float  # high-water mark (VmHWM, summed over the tree)


def memory(root: int) -> Memory:
    pids = tree(root)
    rss = sum(_status_kib(p, "VmRSS") for p in pids)
    hwm = sum(_status_kib(p, "VmHWM") for p in pids)
    return Memory(rss / 1024, hwm / 1024)


@dataclass
class Watched:
    """A process the benchmark measures apart from the others (``pid`` None: not ours)."""

    name: str
    pid: int | None

    def cpu(self) -> float | None:
        return cpu_seconds(self.pid) if self.pid else None

    def memory(self) -> Memory | None:
        return memory(self.pid) if self.pid else None
