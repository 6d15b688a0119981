"""Memory and CPU of processes from /proc: point readings and a background sampler.

Memory comes from ``/proc/PID/status`` (``VmRSS``, its peak ``VmHWM`` and the
anonymous part ``RssAnon``, which excludes shared libraries and the
interpreter's mapped file pages); CPU from ``utime + stime`` of
``/proc/PID/stat``. Everything is reported in MiB and CPU seconds.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
MEM_KEYS = ("VmRSS", "VmHWM", "RssAnon")


def memory_mib(pid: int, proc: Path = Path("/proc")) -> dict[str, float]:
    """``VmRSS``/``VmHWM``/``RssAnon`` of ``pid`` in MiB."""
    out: dict[str, float] = {}
    for line in (proc / str(pid) / "status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in MEM_KEYS:
            out[key] = round(int(value.split()[0]) / 1024, 1)  # kB -> MiB
    return out


def cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float:
    """User + system CPU seconds ``pid`` has used so far."""
    # why rpartition: the command name in field 2 may hold spaces and parentheses.
    fields = (proc / str(pid) / "stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Phase:
    """One measured interval of one process."""

    name: str
    start_wall: float
    start_cpu: float
    end_wall: float = 0.0
    end_cpu: float = 0.0
    rss_max: float = 0.0
    samples: int = 0
    end_mem: dict[str, float] = field(default_factory=dict)

    @property
    def wall_s(self) -> float:
        """Seconds the phase lasted."""
        return self.end_wall - self.start_wall

    @property
    def cpu_s(self) -> float:
        """CPU seconds used during the phase."""
        return self.end_cpu - self.start_cpu

    def row(self) -> dict[str, Any]:
        """The phase as a report row."""
        wall = self.wall_s or float("nan")
        return {
            "phase": self.name,
            "wall_s": round(self.wall_s, 1),
            "cpu_s": round(self.cpu_s, 2),
            "cpu_pct": round(100.0 * self.cpu_s / wall, 1),
            "rss_end_mib": self.end_mem.get("VmRSS"),
            "rss_max_mib": self.rss_max,
            "anon_end_mib": self.end_mem.get("RssAnon"),
            "hwm_mib": self.end_mem.get("VmHWM"),
        }


class Sampler:
    """Samples one pid's RSS every ``interval`` seconds; ``begin``/``end`` delimit phases."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.phases: list[Phase] = []
        self._current: Phase | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sampler-{pid}", daemon=True)

    def start(self) -> Sampler:
        """Start sampling."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling (the open phase, if any, is dropped)."""
        self._stop.set()
        self._thread.join(5)

    def begin(self, name: str, start_wall: float | None = None, start_cpu: float = -1.0) -> None:
        """Open phase ``name`` now (or at the given wall time / CPU reading)."""
        wall = time.monotonic() if start_wall is None else start_wall
        cpu = cpu_seconds(self.pid) if start_cpu < 0 else start_cpu
        with self._lock:
            self._current = Phase(name, wall, cpu)
        self._sample()

    def end(self) -> Phase:
        """Close the open phase and return it."""
        self._sample()
        with self._lock:
            phase, self._current = self._current, None
        if phase is None:
            raise RuntimeError("no phase is open")
        phase.end_wall, phase.end_cpu = time.monotonic(), cpu_seconds(self.pid)
        phase.end_mem = memory_mib(self.pid)
        phase.rss_max = max(phase.rss_max, phase.end_mem.get("VmRSS", 0.0))
        self.phases.append(phase)
        return phase

    def _sample(self) -> None:
        try:
            rss = memory_mib(self.pid).get("VmRSS", 0.0)
        except OSError:
            return  # the process is gone; the caller notices on its own
        with self._lock:
            if self._current is not None:
                self._current.rss_max = max(self._current.rss_max, rss)
                self._current.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()


def cpu_rate(pid: int, seconds: float) -> float:
    """The share of one core ``pid`` used over the next ``seconds`` (blocks)."""
    before, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - start)
