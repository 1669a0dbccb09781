"""Raw readers for Linux ``/proc`` files, kept minimal because they run on the hot path.

``os.open``/``os.read`` instead of ``open()``: one sample of all processes reads
hundreds of small files, and the text-IO layer roughly doubles the cost per file.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROC = "/proc"


class ProcStat(NamedTuple):
    """What one ``/proc/PID/stat`` line tells us; times in clock ticks."""

    pid: int
    comm: str
    ppid: int
    utime: int
    stime: int
    starttime: int  # ticks after boot: with the pid, a process's identity


def boot_clock() -> float:
    """Seconds since boot on the clock ``starttime`` is measured on (counts suspend)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def read_small(path: str) -> bytes:
    """Read a whole small file; raises OSError (e.g. the process vanished)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def parse_stat(pid: int, raw: bytes) -> ProcStat:
    """Parse ``/proc/PID/stat``; ``comm`` may hold spaces and parentheses, hence rfind."""
    lp = raw.find(b"(")
    rp = raw.rfind(b")")
    rest = raw[rp + 2 :].split()
    # rest[0] is field 3 (state): field n is rest[n - 3]
    return ProcStat(
        pid,
        raw[lp + 1 : rp].decode("utf-8", "replace"),
        int(rest[1]),
        int(rest[11]),
        int(rest[12]),
        int(rest[19]),
    )


def pids(proc: str = PROC) -> list[int]:
    """PIDs of all processes visible to us (threads are not listed at top level)."""
    return [int(n) for n in os.listdir(proc) if n.isdigit()]


def read_stat(pid: int, proc: str = PROC) -> ProcStat | None:
    """One process's stat, or None if it exited meanwhile."""
    try:
        return parse_stat(pid, read_small(f"{proc}/{pid}/stat"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    except (IndexError, ValueError):  # exited half-way (empty read) or a kernel oddity
        return None


def read_all_stats(proc: str = PROC) -> list[ProcStat]:
    """stat of every visible process; those that exit during the scan are skipped."""
    out = []
    for pid in pids(proc):
        st = read_stat(pid, proc)
        if st is not None:
            out.append(st)
    return out


def read_cmdline(pid: int, proc: str = PROC) -> str:
    """Command line joined by spaces ('' for kernel threads, zombies, or vanished ones)."""
    try:
        raw = read_small(f"{proc}/{pid}/cmdline")
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")


def read_cgroup(pid: int, proc: str = PROC) -> str:
    """The process's cgroup path(s), one per line as in ``/proc/PID/cgroup``."""
    try:
        raw = read_small(f"{proc}/{pid}/cgroup")
    except OSError:
        return ""
    paths = [line.split(b":", 2)[-1] for line in raw.splitlines() if line]
    return "\n".join(p.decode("utf-8", "replace") for p in paths)


def read_uid(pid: int, proc: str = PROC) -> int | None:
    """Effective uid of the process: the owner of its /proc directory, one stat call."""
    try:
        return os.stat(f"{proc}/{pid}").st_uid
    except OSError:
        return None


class CpuTimes(NamedTuple):
    """Whole-host CPU from the first line of ``/proc/stat``, in ticks."""

    busy: int
    total: int
    ncpu: int


def read_cpu_times(proc: str = PROC) -> CpuTimes:
    """Busy and total ticks of all CPUs; busy excludes idle and iowait, and guest time
    (already counted in user/nice) is not counted twice."""
    raw = read_small(f"{proc}/stat")
    ncpu = 0
    first: list[bytes] = []
    for line in raw.splitlines():
        if line.startswith(b"cpu "):
            first = line.split()[1:]
        elif line.startswith(b"cpu"):
            ncpu += 1
        elif ncpu:
            break
    f = [int(x) for x in first[:8]]  # user nice system idle iowait irq softirq steal
    f += [0] * (8 - len(f))
    total = sum(f)
    busy = total - f[3] - f[4]
    return CpuTimes(busy, total, max(ncpu, 1))


def read_net_dev(proc: str = PROC) -> dict[str, tuple[int, int]]:
    """Received and transmitted bytes per interface from ``/proc/net/dev``."""
    raw = read_small(f"{proc}/net/dev")
    out = {}
    for line in raw.splitlines()[2:]:
        name, _, rest = line.partition(b":")
        fields = rest.split()
        if len(fields) >= 9:
            out[name.strip().decode()] = (int(fields[0]), int(fields[8]))
    return out


def read_whole(path: str) -> bytes:
    """Read a file of any size (``/proc/net/tcp`` grows with the number of sockets)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
