"""The network-ready prober: run by path with the host's python inside a pod's netns.

Standard library only (it runs under ``nsenter``, outside the venv's imports).
It reads target IPs on stdin, one a line, and from then on opens a fresh
non-blocking TCP connection to ``IP:PORT`` every ``EVERY`` seconds until one
of them gets a reply: an accepted connection, or ECONNREFUSED (the target's
kernel answered RST on a closed port), which proves the path both ways without
waiting for any process in the target to start. For each IP it prints one line::

    IP ok WALLCLOCK ATTEMPTS      # WALLCLOCK: time.time() when the reply was seen
    IP fail WALLCLOCK ATTEMPTS    # no reply within DEADLINE seconds of being fed

and exits once stdin is closed and every IP is answered or failed.
Usage: ``python netready_prober.py PORT EVERY TTL DEADLINE [ARP_RETRANS_MS]``.

With ARP_RETRANS_MS the netns' neighbour tables retry ARP that often (the
kernel's default is once a second, its floor 10 ms): a target on the same
subnet is resolved by ARP first, and an ARP request sent before the target's
path works would otherwise hold every SYN back for a second.
"""

from __future__ import annotations

import errno
import resource
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

READY_ERRNOS = (0, errno.ECONNREFUSED)


@dataclass
class Target:
    """One IP being probed."""

    deadline: float  # monotonic
    attempts: int = 0
    fds: set[int] = field(default_factory=set)


class Prober:
    """The probing loop's state: pending targets and the sockets in flight."""

    def __init__(self, port: int, ttl: float, deadline: float) -> None:
        self.port, self.ttl, self.deadline = port, ttl, deadline
        self.epoll = select.epoll()
        self.targets: dict[str, Target] = {}
        self.socks: dict[int, tuple[socket.socket, str, float]] = {}  # fd -> sock, ip, opened

    def add(self, ip: str, now: float) -> None:
        """Start probing ``ip`` (once; a repeated IP is ignored)."""
        self.targets.setdefault(ip, Target(now + self.deadline))

    def _drop(self, fd: int) -> None:
        sock, ip, _ = self.socks.pop(fd)
        self.epoll.unregister(fd)
        sock.close()
        if ip in self.targets:
            self.targets[ip].fds.discard(fd)

    def _finish(self, ip: str, status: str, wallclock: float) -> None:
        target = self.targets.pop(ip)
        for fd in list(target.fds):
            self._drop(fd)
        sys.stdout.write(f"{ip} {status} {wallclock:.6f} {target.attempts}\n")
        sys.stdout.flush()

    def on_events(self, events: list[tuple[int, int]], wallclock: float) -> None:
        """Judge the sockets epoll reported: a reply finishes their target."""
        for fd, _ in events:
            if fd not in self.socks:
                continue
            sock, ip, _ = self.socks[fd]
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err in READY_ERRNOS and ip in self.targets:
                self._finish(ip, "ok", wallclock)
            else:
                self._drop(fd)

    def tick(self, mono: float, wallclock: float) -> None:
        """Expire old sockets and late targets; send one new SYN to every pending target."""
        for fd in [fd for fd, (_, _, opened) in self.socks.items() if mono - opened > self.ttl]:
            self._drop(fd)
        for ip, target in list(self.targets.items()):
            if mono > target.deadline:
                self._finish(ip, "fail", wallclock)
                continue
            target.attempts += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            rc = sock.connect_ex((ip, self.port))
            if rc in READY_ERRNOS:
                sock.close()
                self._finish(ip, "ok", time.time())
            elif rc == errno.EINPROGRESS:
                self.socks[sock.fileno()] = (sock, ip, mono)
                target.fds.add(sock.fileno())
                self.epoll.register(sock.fileno(), select.EPOLLOUT)
            else:
                sock.close()  # e.g. ENETUNREACH: no route yet; try again next tick


class Feed:
    """IPs arriving on stdin (read by a thread), handed to the loop in batches."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.new: list[str] = []
        self.closed = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            if line.strip():
                with self.lock:
                    self.new.append(line.strip())
        self.closed.set()

    def take(self) -> list[str]:
        """The IPs fed since the last call."""
        with self.lock:
            out, self.new = self.new, []
        return out


def set_arp_retrans(ms: int) -> None:
    """Set ``retrans_time_ms`` of every neighbour table of this netns (and the default)."""
    for table in Path("/proc/sys/net/ipv4/neigh").iterdir():
        (table / "retrans_time_ms").write_text(str(ms))


def main(argv: list[str]) -> int:
    """Probe until stdin is closed and nothing is pending."""
    port, every, ttl, deadline = int(argv[0]), float(argv[1]), float(argv[2]), float(argv[3])
    # why: up to TTL/EVERY sockets per pending target are open at once.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if len(argv) > 4:
        set_arp_retrans(int(argv[4]))
    prober, feed = Prober(port, ttl, deadline), Feed()
    next_tick = time.monotonic()
    while True:
        events = prober.epoll.poll(max(0.0, next_tick - time.monotonic()))
        prober.on_events(events, time.time())
        mono = time.monotonic()
        if mono < next_tick:
            continue
        next_tick = mono + every
        closed = feed.closed.is_set()  # why before take(): no IP can arrive after this check
        for ip in feed.take():
            prober.add(ip, mono)
        if closed and not prober.targets:
            return 0
        prober.tick(mono, time.time())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
