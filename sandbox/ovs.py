"""Private Open vSwitch instances: one ovsdb-server + ovs-vswitchd per directory.

Tests, the sandbox cluster and benchmarks each get their own OVS that never
touches /var/run/openvswitch. Every file of an instance (database, sockets,
pidfiles, logs) lives in its ``workdir``; ``env`` points the stock OVS tools at
it. The daemons run in the foreground as children of this process, so
``stop()`` ends exactly the pids it started.

This machine has no openvswitch kernel module: bridges must use
``datapath_type=netdev``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
BINARIES = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class OvsCommandError(RuntimeError):
    """An OVS tool exited non-zero; carries the command line and its stderr."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"{' '.join(argv)} exited {returncode}: {stderr.strip()}")
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class OvsInstance:
    """One private OVS: ``start()`` it, talk to it via ``db_remote``/``env``, ``stop()`` it.

    Args:
        workdir: directory holding conf.db, db.sock, pidfiles, ctl sockets and logs.
            Created if missing. Keep the path short: unix socket paths are
            limited to 107 bytes.
        netns: run both daemons inside this named network namespace
            (``/run/netns/NAME`` must exist); ports they create live there.
        userspace_tso: set ``other_config:userspace-tso-enable=true`` before
            ovs-vswitchd starts (OVS only reads it at start-up).
    """

    def __init__(self, workdir: Path, netns: str | None = None, userspace_tso: bool = False):
        self.workdir = Path(workdir).resolve()
        self.netns = netns
        self.userspace_tso = userspace_tso
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- addressing -------------------------------------------------------
    @property
    def db_remote(self) -> str:
        """OVSDB remote of this instance, e.g. ``unix:/tmp/x/db.sock``."""
        return f"unix:{self.workdir / 'db.sock'}"

    @property
    def env(self) -> dict[str, str]:
        """Variables that make plain ovs-vsctl/ovs-ofctl/ovs-appctl address this instance."""
        d = str(self.workdir)
        return {"OVS_RUNDIR": d, "OVS_DBDIR": d, "OVS_LOGDIR": d, "OVS_SYSCONFDIR": d}

    def _tool_env(self) -> dict[str, str]:
        # why: the daemons live in /usr/sbin, which a non-login PATH may lack.
        path = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
        return {**os.environ, "PATH": path, **self.env}

    @property
    def pids(self) -> dict[str, int]:
        """Pids of the daemons started by this object (``ovsdb-server``, ``ovs-vswitchd``)."""
        return {name: proc.pid for name, proc in self._procs.items()}

    def log_path(self, daemon: str) -> Path:
        """Path of a daemon's log file (``ovsdb-server`` or ``ovs-vswitchd``)."""
        return self.workdir / f"{daemon}.log"

    # -- tools ------------------------------------------------------------
    def run(self, *argv: str, timeout: float = 30.0) -> str:
        """Run an OVS tool against this instance; return stdout, raise OvsCommandError."""
        cmd = list(argv)
        res = subprocess.run(
            cmd, env=self._tool_env(), capture_output=True, text=True, timeout=timeout
        )
        if res.returncode != 0:
            raise OvsCommandError(cmd, res.returncode, res.stderr)
        return res.stdout

    def vsctl(self, *args: str) -> str:
        """``ovs-vsctl --timeout=10 ARGS`` against this instance's database."""
        return self.run("ovs-vsctl", f"--db={self.db_remote}", "--timeout=10", *args)

    def ofctl(self, *args: str) -> str:
        """``ovs-ofctl ARGS``; a bridge name resolves to ``workdir/BRIDGE.mgmt``."""
        return self.run("ovs-ofctl", *args)

    def appctl(self, *args: str) -> str:
        """``ovs-appctl ARGS`` (target ovs-vswitchd unless ARGS start with ``-t``)."""
        return self.run("ovs-appctl", "--timeout=10", *args)

    # -- lifecycle --------------------------------------------------------
    def start(self) -> OvsInstance:
        """Create the database and start both daemons; return once vswitchd answers.

        On any failure, whatever was started is stopped again before raising.
        """
        if self._procs:
            raise RuntimeError(f"OVS instance in {self.workdir} already started")
        if self.netns and not Path("/run/netns", self.netns).exists():
            raise FileNotFoundError(f"network namespace {self.netns!r} does not exist")
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_db()
            self.vsctl("--no-wait", "init")
            if self.userspace_tso:
                self.vsctl(
                    "--no-wait",
                    "set",
                    "Open_vSwitch",
                    ".",
                    "other_config:userspace-tso-enable=true",
                )
            self._start_vswitchd()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_db(self) -> None:
        db = self.workdir / "conf.db"
        if not db.exists():
            self.run("ovsdb-tool", "create", str(db), str(SCHEMA))
        sock = self.workdir / "db.sock"
        sock.unlink(missing_ok=True)  # why: a stale socket would pass the readiness check
        self._spawn(
            "ovsdb-server",
            str(db),
            f"--remote=punix:{sock}",
            f"--pidfile={self.workdir / 'ovsdb-server.pid'}",
        )
        self._wait_for(sock.exists, "ovsdb-server", f"{sock} to appear")

    def _start_vswitchd(self) -> None:
        proc = self._spawn(
            "ovs-vswitchd", self.db_remote, f"--pidfile={self.workdir / 'ovs-vswitchd.pid'}"
        )
        # why: `ip netns exec` and the daemons exec in place, so the Popen pid is
        # the daemon's pid and names its unixctl socket.
        ctl = self.workdir / f"ovs-vswitchd.{proc.pid}.ctl"
        self._wait_for(ctl.exists, "ovs-vswitchd", f"{ctl} to appear")
        self.run("ovs-appctl", "-t", str(ctl), "version", timeout=START_TIMEOUT)

    def _spawn(self, daemon: str, *args: str) -> subprocess.Popen[bytes]:
        argv = [daemon, *args, f"--log-file={self.log_path(daemon)}", "-vconsole:off"]
        # why: a foreground daemon (no --detach) logs to syslog at ERR by default;
        # keep the host's syslog clean, everything is in the log file.
        argv.append("-vsyslog:off")
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        proc = subprocess.Popen(
            argv,
            env=self._tool_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # why: a Ctrl-C at the terminal must not skip stop()
        )
        self._procs[daemon] = proc
        return proc

    def _wait_for(self, cond: Callable[[], bool], daemon: str, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        proc = self._procs[daemon]
        while not cond():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{daemon} exited with {proc.returncode}; see {self.log_path(daemon)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}; see {self.log_path(daemon)}")
            time.sleep(0.01)

    def crash_vswitchd(self) -> None:
        """SIGKILL ovs-vswitchd (a crash, for failure tests) and reap it; flows are lost."""
        proc = self._procs.pop("ovs-vswitchd")
        proc.kill()
        proc.wait()

    def start_vswitchd(self) -> None:
        """Start ovs-vswitchd again after `crash_vswitchd`; return once it answers."""
        if "ovs-vswitchd" in self._procs:
            raise RuntimeError("ovs-vswitchd is running")
        self._start_vswitchd()

    def stop(self) -> None:
        """Stop the daemons this object started (vswitchd first) and reap them. Idempotent.

        ovs-vswitchd is asked to ``exit --cleanup`` so it deletes its datapath
        ports (netdev internal ports are persistent TAP devices that SIGTERM
        would leave behind); SIGTERM then SIGKILL are the fallbacks.
        """
        vswitchd = self._procs.pop("ovs-vswitchd", None)
        if vswitchd is not None and vswitchd.poll() is None:
            ctl = self.workdir / f"ovs-vswitchd.{vswitchd.pid}.ctl"
            try:
                self.run("ovs-appctl", "-t", str(ctl), "exit", "--cleanup", timeout=STOP_TIMEOUT)
                _terminate(vswitchd, grace=STOP_TIMEOUT)
            except (OvsCommandError, subprocess.TimeoutExpired):
                pass  # the loop below signals it
        for proc in (vswitchd, self._procs.pop("ovsdb-server", None)):
            if proc is not None:
                _terminate(proc, grace=0.0)

    def __enter__(self) -> OvsInstance:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Give ``proc`` ``grace`` seconds to exit, then SIGTERM, then SIGKILL; reap it."""
    for sig, wait in ((None, grace), (signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, None)):
        if proc.poll() is not None:
            return
        if sig is not None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def binaries_missing() -> list[str]:
    """Names of the OVS programs (and the schema) this module needs but cannot find."""
    from shutil import which

    missing = [b for b in BINARIES if which(b) is None and not Path("/usr/sbin", b).exists()]
    if not SCHEMA.exists():
        missing.append(str(SCHEMA))
    return missing
