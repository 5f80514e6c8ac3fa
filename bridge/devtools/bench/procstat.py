"""CPU time and resident memory of another process, read from ``/proc``.

The benchmark measures the bridge from outside (a separate process) so that the
load generator's own work never pollutes the figures.  ``/proc/<pid>/stat``
fields 14 and 15 (utime, stime) are in clock ticks (``SC_CLK_TCK``, usually 100
per second), so a window of tens of seconds is needed for a precise per-call
figure; ``VmRSS`` in ``/proc/<pid>/status`` is in KiB.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One reading of a process: CPU seconds used so far and resident memory now."""

    cpu_s: float
    rss_kib: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU time consumed by ``pid`` so far (children not included)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read().decode("ascii", "replace")
    # The command name (field 2) may contain spaces and parentheses: split after it.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of the full line
    return (utime + stime) / _TICKS_PER_S


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS``)."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def sample(pid: int) -> ProcSample:
    return ProcSample(cpu_seconds(pid), rss_kib(pid))


def machine_description() -> dict[str, str | int]:
    """nproc, CPU model and Python version: printed with every result."""
    import platform

    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count() or 0,
        "cpu_model": model,
        "python": platform.python_version(),
    }
