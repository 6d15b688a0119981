"""The watchers of the network-ready benchmark (bench.netready) and their parsers.

* :class:`Prober` runs ``bench/netready_prober.py`` with the host's python
  inside a pod's netns and collects its verdict on every IP it is fed;
* :func:`ovsdb_monitor` reports every pod port a node's CNI commits to OVSDB;
* :func:`add_returns` reads when each ADD returned from sluice-controller's log,
  :func:`controller_stages` when it learnt each pod and installed its flows;
* :func:`sandbox_lock` holds the flock that serializes runs of the sandbox.

The parsers are pure; the processes are children stopped by pid.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import stop_proc
from ovsdb import schema

LOCK_PATH = Path("/tmp/sluice-sandbox.lock")
PROBER = Path(__file__).with_name("netready_prober.py")
PROBE_PORT = 9  # closed in every pod: its kernel answers RST
PROBE_EVERY_S = 0.003
SOCKET_TTL_S = 0.25  # a reply to a SYN arrives well within this once the path works
DEADLINE_S = 10.0
ARP_RETRANS_MS = 10  # see netready_prober.py: the kernel's floor; its default is 1000
ADD_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*?CNI ADD (\S+)/(\S+) rc=(\d+) in ([\d.]+) ms",
    re.M,
)
_STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) "
# controller.podwatch: the controller learnt the pod from its OVSDB row
POD_LINE = re.compile(_STAMP + r".*?controller\.podwatch: pod (\S+) on port \S+: ofport \d+", re.M)
# controller.reconcile: the barrier after the pod's flows was answered
FLOWS_LINE = re.compile(_STAMP + r".*?pod flows installed for ([^:]+):", re.M)


@dataclass(frozen=True)
class PortRow:
    """A pod port as the CNI recorded it in OVSDB."""

    pod: str  # namespace/name
    container_id: str
    ip: str
    netns: str
    ofport: int | None = None  # once ovs-vswitchd numbered the port


def _port_row(cell: Any, ofport: Any = None) -> PortRow | None:
    """A PortRow from one ``external_ids`` cell (OVSDB JSON ``["map", [[k, v], ...]]``)."""
    if not (isinstance(cell, list) and len(cell) == 2 and cell[0] == "map"):
        return None
    ids = dict(cell[1])
    if ids.get(schema.OWNER) != schema.OWNER_CNI or not ids.get(schema.IPS):
        return None
    return PortRow(
        pod=f"{ids.get(schema.POD_NAMESPACE, '')}/{ids.get(schema.POD_NAME, '')}",
        container_id=ids.get(schema.CONTAINER_ID, ""),
        ip=ids[schema.IPS].split(",")[0].split("/")[0],
        netns=ids.get(schema.NETNS, ""),
        # why > 0: an unset ofport is an empty set, a failed port -1
        ofport=ofport if isinstance(ofport, int) and ofport > 0 else None,
    )


def monitor_rows(line: str) -> list[PortRow]:
    """Pod ports in one line of ``ovsdb-client monitor ... Interface external_ids,ofport
    --format=json`` (initial, inserted and modified rows)."""
    try:
        doc = json.loads(line)
        heads, data = doc["headings"], doc["data"]
        act, ids = heads.index("action"), heads.index("external_ids")
    except (ValueError, KeyError, TypeError, AttributeError):
        return []
    port = heads.index("ofport") if "ofport" in heads else None
    rows = [
        _port_row(r[ids], r[port] if port is not None else None)
        for r in data
        if r[act] in ("initial", "insert", "new")
    ]
    return [r for r in rows if r is not None]


def find_rows(text: str) -> list[PortRow]:
    """Pod ports in ``ovs-vsctl --format=json --columns=external_ids find Interface ...``."""
    rows = [_port_row(r[0]) for r in json.loads(text)["data"]]
    return [r for r in rows if r is not None]


def add_returns(log_text: str, clock: Callable[[str], float] | None = None) -> dict[str, float]:
    """Container-id prefix (as logged, 12 chars) -> wallclock when its successful ADD returned.

    ``clock`` turns ``YYYY-mm-dd HH:MM:SS`` into epoch seconds (local time by default).
    """
    at = _epoch(clock)
    return {
        m.group(3): at(m.group(1), m.group(2))
        for m in ADD_LINE.finditer(log_text)
        if m.group(5) == "0"
    }


def _epoch(clock: Callable[[str], float] | None) -> Callable[[str, str], float]:
    """(``YYYY-mm-dd HH:MM:SS``, ``mmm``) -> epoch seconds, mid-millisecond."""
    to_epoch = clock or (lambda s: time.mktime(time.strptime(s, "%Y-%m-%d %H:%M:%S")))
    # why + 0.5 ms: logging truncates to the millisecond; take the middle.
    return lambda stamp, ms: to_epoch(stamp) + (int(ms) + 0.5) / 1000.0


def controller_stages(
    log_text: str, clock: Callable[[str], float] | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """When sluice-controller learnt each pod and when its flows were installed.

    Returns ({"namespace/name": wallclock of podwatch's first line},
    {container-id prefix (12 chars): wallclock of the first "pod flows installed"}).
    """
    at = _epoch(clock)
    seen: dict[str, float] = {}
    for m in POD_LINE.finditer(log_text):
        seen.setdefault(m.group(3), at(m.group(1), m.group(2)))
    installed: dict[str, float] = {}
    for m in FLOWS_LINE.finditer(log_text):
        for key in m.group(3).split():
            parts = key.split("/")  # pod/<container id>/<ifname>
            if len(parts) == 3:
                installed.setdefault(parts[1][:12], at(m.group(1), m.group(2)))
    return seen, installed


@dataclass(frozen=True)
class Probe:
    """A prober's verdict on one IP."""

    ok: bool
    wallclock: float
    attempts: int


def probe_line(line: str) -> tuple[str, Probe] | None:
    """``IP ok|fail WALLCLOCK ATTEMPTS`` -> (IP, Probe); None for anything else."""
    parts = line.split()
    if len(parts) != 4 or parts[1] not in ("ok", "fail"):
        return None
    return parts[0], Probe(parts[1] == "ok", float(parts[2]), int(parts[3]))


@contextmanager
def sandbox_lock(path: Path = LOCK_PATH) -> Iterator[None]:
    """Hold the sandbox lock (flock); reuse it when the caller runs us under ``flock PATH``."""
    fd = _inherited_fd(path)
    own = fd is None
    if fd is None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"netready: waiting for {path}", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if own:
            os.close(fd)  # why not unlock an inherited fd: the caller's flock owns it


def _inherited_fd(path: Path) -> int | None:
    """An open fd of this process on ``path`` (``flock PATH cmd`` passes its locked fd on).

    flock() on that same open file is a no-op while it holds the lock; a fresh
    open() of the path would wait for our own caller forever.
    """
    if not path.exists():
        return None
    want = path.stat()
    for name in os.listdir("/proc/self/fd"):
        try:
            st = os.fstat(int(name))
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            return int(name)
    return None


class LineChild:
    """A child whose stdout lines go to ``on_line(line, wallclock)`` as they arrive."""

    def __init__(self, argv: list[str], on_line: Callable[[str, float], None], log: Path) -> None:
        self._on_line = on_line
        self.lines = 0
        with log.open("w") as err:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
            )
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._on_line(line, time.time())
            self.lines += 1

    def has_output(self) -> bool:
        """Whether the child has printed a line yet."""
        return self.lines > 0

    def write(self, line: str) -> None:
        """One line to the child's stdin (from any thread); dropped once it is closed."""
        assert self.proc.stdin is not None
        with self._lock:
            if self.proc.stdin.closed:
                return
            try:
                self.proc.stdin.write(line + "\n")
                self.proc.stdin.flush()
            except BrokenPipeError:  # why: a dead prober shows as missing verdicts
                return

    def close(self, wait: float) -> None:
        """Close its stdin, give it ``wait`` seconds to finish, then stop it by pid."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with self._lock:
                self.proc.stdin.close()
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            stop_proc(self.proc)
        self._thread.join(5)


class Prober(LineChild):
    """``netready_prober.py`` inside a pod's netns; its verdicts by IP."""

    def __init__(self, enter: list[str], log: Path) -> None:
        self.results: dict[str, Probe] = {}
        args = [PROBE_PORT, PROBE_EVERY_S, SOCKET_TTL_S, DEADLINE_S, ARP_RETRANS_MS]
        argv = [*enter, sys.executable, str(PROBER), *map(str, args)]
        super().__init__(argv, self._on_probe, log)

    def _on_probe(self, line: str, _wallclock: float) -> None:
        parsed = probe_line(line)
        if parsed is not None:
            self.results.setdefault(*parsed)


def ovsdb_monitor(db_sock: Path, on_row: Callable[[PortRow, float], None], log: Path) -> LineChild:
    """``ovsdb-client monitor`` of the Interface table; ``on_row`` for every pod port row."""

    def on_line(line: str, wallclock: float) -> None:
        for row in monitor_rows(line):
            on_row(row, wallclock)

    argv = ["stdbuf", "-oL", "ovsdb-client", "monitor", f"unix:{db_sock}", "Open_vSwitch"]
    return LineChild([*argv, "Interface", "external_ids,ofport", "--format=json"], on_line, log)
