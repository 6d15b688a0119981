"""Shared helpers of the benchmarks: namespaces, timed execs, statistics, clean-up.

Every namespace a benchmark makes is called ``slb-*`` and is registered on a
``contextlib.ExitStack`` so it is removed even when the benchmark fails.
Processes are started as children and stopped by pid.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PREFIX = "slb-"
# why a second prefix: the resources benchmark's control plane lives in ``slr-*``,
# so the other benchmarks' leak checks (slb-*) never see it while both run.
PREFIXES = (PREFIX, "slr-")
CLONE_NEWNET = 0x40000000
TOOL_PATH = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"


def sh(*argv: str, check: bool = True, timeout: float = 60.0) -> str:
    """Run a command; return stdout; raise RuntimeError with stderr if it fails."""
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr.strip()}")
    return res.stdout


def in_ns(ns: str, *argv: str, check: bool = True, timeout: float = 60.0) -> str:
    """Run a command inside netns ``ns`` with ``ip netns exec``."""
    return sh("ip", "netns", "exec", ns, *argv, check=check, timeout=timeout)


def new_netns(tag: str, prefix: str = PREFIX) -> str:
    """Create ``<prefix><tag>-<hex>`` with lo up; return its name (the caller deletes it)."""
    if prefix not in PREFIXES:
        raise ValueError(f"netns prefix {prefix!r} is not one of {PREFIXES}")
    # why 6 bytes: the CNI bench makes 2400 namespaces; with 3 bytes one run in six
    # hit a name already taken.
    name = f"{prefix}{tag}-{secrets.token_hex(6)}"
    sh("ip", "netns", "add", name)
    sh("ip", "-n", name, "link", "set", "lo", "up")
    return name


def del_netns(name: str) -> None:
    """Delete a netns made here (never anything outside ``slb-*``/``slr-*``)."""
    if not name.startswith(PREFIXES):
        raise ValueError(f"refusing to delete netns {name!r}: not ours")
    if Path("/run/netns", name).exists():
        sh("ip", "netns", "del", name, check=False)


@contextmanager
def netns(tag: str, prefix: str = PREFIX) -> Iterator[str]:
    """A fresh ``<prefix>*`` netns, removed afterwards."""
    name = new_netns(tag, prefix)
    try:
        yield name
    finally:
        del_netns(name)


class NetnsPool:
    """Pre-made pod namespaces (creation is not part of a measurement); all deleted at close."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.names: list[str] = []

    def make(self, count: int) -> list[str]:
        """Create ``count`` more namespaces; return their names."""
        # why one at a time into ``names``: if one creation fails, those made
        # before it are still deleted by ``close``.
        start = len(self.names)
        for _ in range(count):
            self.names.append(new_netns(self.tag))
        return self.names[start:]

    def release(self, names: Sequence[str]) -> None:
        """Delete some namespaces now."""
        for name in names:
            del_netns(name)
        gone = set(names)
        self.names = [n for n in self.names if n not in gone]

    def close(self) -> None:
        """Delete every namespace still held."""
        self.release(list(self.names))


_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(name: str) -> None:
    """Move the *calling thread* into netns ``name`` (children it spawns start there)."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def netns_executor(name: str, workers: int) -> ThreadPoolExecutor:
    """A thread pool whose threads live in netns ``name``.

    A runtime runs in the node's network namespace and execs the plugin from
    there; spawning from a thread that entered the netns reproduces that
    without the extra exec and /sys remount of ``ip netns exec``.
    """
    return ThreadPoolExecutor(workers, initializer=enter_netns, initargs=(name,))


@dataclass(frozen=True)
class ExecResult:
    """One timed plugin execution."""

    rc: int
    seconds: float
    stdout: str
    stderr: str


def timed_exec(argv: Sequence[str], env: dict[str, str], stdin: str) -> ExecResult:
    """Exec ``argv`` with ``env`` and ``stdin``; time from spawn to exit (as a runtime sees it)."""
    start = time.perf_counter()
    proc = subprocess.run(list(argv), input=stdin, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    return ExecResult(proc.returncode, elapsed, proc.stdout, proc.stderr)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p99/mean in milliseconds of a list of durations in seconds."""
    ms = [s * 1000.0 for s in seconds]
    mean = sum(ms) / len(ms) if ms else float("nan")
    return {
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(mean, 3),
    }


def ratio(value: float, reference: float) -> float | None:
    """value / reference rounded to 3 digits, None when undefined."""
    if not reference or reference != reference or value != value:
        return None
    return round(value / reference, 3)


def target(name: str, measured: float | None, limit: float, higher_is_better: bool = False) -> Any:
    """A target record: whether ``measured`` meets ``limit`` and the gap if not."""
    if measured is None:
        return {"target": name, "limit": limit, "measured": None, "met": False}
    met = measured >= limit if higher_is_better else measured <= limit
    return {"target": name, "limit": limit, "measured": measured, "met": met}


def stop_proc(proc: subprocess.Popen[Any] | None, grace: float = 5.0) -> None:
    """Stop a child by pid: SIGTERM, then SIGKILL after ``grace`` seconds; reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)


def wait_until(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.01) -> None:
    """Poll ``cond`` until true; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def loadavg() -> list[float]:
    """The 1/5/15-minute load averages."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
