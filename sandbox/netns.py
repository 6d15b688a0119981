"""Namespace, link, mount and process helpers for the sandbox.

Every helper is idempotent (``ensure_*`` / ``*_if_exists``) and shells out to
iproute2 / util-linux, so the sandbox needs no extra Python dependency.

Processes are started with :func:`start_process` and stopped with
:func:`stop_process`, always by pid.  A :class:`Proc` records the pid *and*
the kernel start time of the process, so a ``down`` run from another process
never signals a recycled pid.

Node daemons (containerd, kubelet, kube-proxy) run under
``nsenter --net=/run/netns/NODE --mount=MNTNS``.  ``ip netns exec`` is not
used for them: it remounts /sys, which hides /sys/fs/cgroup from kubelet and
runc.  The mount namespace is a *persistent* one (``unshare --mount=FILE
--propagation private``), so the three daemons of a node share it: the
kubelet's volume mounts must be visible to containerd/runc.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

NETNS_DIR = Path("/run/netns")


def sh(cmd: Sequence[str], check: bool = True, input_: str | None = None) -> str:
    """Run *cmd*, return its stdout; raise RuntimeError with stderr on failure."""
    res = subprocess.run(list(cmd), capture_output=True, text=True, input=input_)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


# --------------------------------------------------------------------------- netns


def netns_path(name: str) -> Path:
    """Path of the named netns file made by ``ip netns add``."""
    return NETNS_DIR / name


def ensure_netns(name: str) -> Path:
    """Create netns *name* if missing and bring its loopback up; return its path."""
    if not netns_path(name).exists():
        sh(["ip", "netns", "add", name])
    sh(["ip", "-n", name, "link", "set", "lo", "up"])
    return netns_path(name)


def delete_netns_if_exists(name: str) -> None:
    """Delete netns *name*; links and iptables rules inside it go with it."""
    if netns_path(name).exists():
        sh(["ip", "netns", "delete", name], check=False)


def list_netns(prefix: str) -> list[str]:
    """Names of the netns under /run/netns starting with *prefix*."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def _ip(netns: str | None) -> list[str]:
    """``ip`` argv prefix for *netns* (None = the root netns)."""
    return ["ip", "-n", netns] if netns else ["ip"]


def link_exists(dev: str, netns: str | None = None) -> bool:
    """True if link *dev* exists in *netns*."""
    res = subprocess.run([*_ip(netns), "link", "show", "dev", dev], capture_output=True)
    return res.returncode == 0


def ensure_veth(name: str, netns: str | None, peer: str, peer_netns: str | None) -> None:
    """Create veth *name* (in *netns*) with *peer* (in *peer_netns*) unless it exists.

    None means the root netns.  Both ends are created directly in their
    namespaces, so a node's eth0 never appears, even briefly, in the root netns.
    """
    if link_exists(name, netns):
        if not link_exists(peer, peer_netns):
            raise RuntimeError(f"veth {name} exists but its peer {peer} is not in {peer_netns}")
        return
    cmd = [*_ip(netns), "link", "add", name, "type", "veth", "peer", "name", peer]
    # why: "netns <our pid>" is how to say "the root netns" (where we run) to ip -n X.
    sh([*cmd, "netns", peer_netns or str(os.getpid())])


def delete_link_if_exists(dev: str, netns: str | None = None) -> None:
    """Delete link *dev* in *netns* if present (its veth peer goes too)."""
    if link_exists(dev, netns):
        sh([*_ip(netns), "link", "del", dev], check=False)


def ensure_bridge(dev: str, netns: str | None) -> None:
    """Create Linux bridge *dev* in *netns* (if missing) and set it up."""
    if not link_exists(dev, netns):
        sh([*_ip(netns), "link", "add", dev, "type", "bridge"])
    sh([*_ip(netns), "link", "set", dev, "up"])


def ensure_master(dev: str, master: str, netns: str | None) -> None:
    """Attach *dev* to bridge *master* and set it up."""
    sh([*_ip(netns), "link", "set", dev, "master", master, "up"])


def ensure_address(dev: str, cidr: str, netns: str | None) -> None:
    """Add *cidr* to *dev* unless some link of the netns has it; set the link up.

    # why: a node's network plugin may have moved the address onto another link
    # (Sluice moves the uplink's address onto an OVS bridge); adding it back to
    # *dev* would give the netns two routes for the subnet.
    """
    out = sh([*_ip(netns), "-o", "addr", "show"])
    if f" {cidr} " not in out:
        sh([*_ip(netns), "addr", "add", cidr, "dev", dev])
    sh([*_ip(netns), "link", "set", dev, "up"])


def ensure_default_route(gateway: str, netns: str) -> None:
    """Add a default route via *gateway* unless *netns* has one via it (on any link)."""
    if f"default via {gateway} " in sh([*_ip(netns), "route", "show", "default"]) + " ":
        return
    sh([*_ip(netns), "route", "replace", "default", "via", gateway])


def ns_sysctl(netns: str, key: str, value: str) -> None:
    """Write a per-netns sysctl (e.g. net.ipv4.ip_forward) inside *netns* only."""
    sh(["nsenter", f"--net={netns_path(netns)}", "sysctl", "-q", "-w", f"{key}={value}"])


# --------------------------------------------------------------------------- mounts


def mounts_under(prefix: Path) -> list[str]:
    """Mount points (root mount namespace view) at or below *prefix*, deepest first."""
    found = []
    base = str(prefix).rstrip("/")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].replace("\\040", " ")
            if target == base or target.startswith(base + "/"):
                found.append(target)
    return sorted(found, key=len, reverse=True)


def is_mountpoint(path: Path) -> bool:
    """True if *path* is a mount point in our mount namespace."""
    return str(path).rstrip("/") in mounts_under(path)


def ensure_private_dir(path: Path) -> None:
    """Make *path* a private bind mount of itself (needed to hold mount-ns files).

    # why: the kernel refuses to pin a mount namespace on a file whose mount
    could propagate into that same namespace; a private mount cannot.
    """
    path.mkdir(parents=True, exist_ok=True)
    if not is_mountpoint(path):
        sh(["mount", "--bind", str(path), str(path)])
    sh(["mount", "--make-private", str(path)])


def ensure_mount_ns(nsfile: Path) -> Path:
    """Create a persistent private mount namespace pinned on *nsfile* (if not yet)."""
    if is_mountpoint(nsfile):
        return nsfile
    nsfile.touch()
    sh(["unshare", f"--mount={nsfile}", "--propagation", "private", "true"])
    return nsfile


def unmount_if_mounted(path: Path) -> None:
    """Lazily unmount *path* (repeatedly, for stacked mounts) if it is mounted."""
    for _ in range(8):
        if not is_mountpoint(path):
            return
        sh(["umount", "-l", str(path)], check=False)


def ns_prefix(netns: str | None = None, mntns: Path | None = None) -> list[str]:
    """argv prefix that runs a command in *netns* and/or the mount ns *mntns*."""
    if netns is None and mntns is None:
        return []
    cmd = ["nsenter"]
    if netns:
        cmd.append(f"--net={netns_path(netns)}")
    if mntns:
        cmd.append(f"--mount={mntns}")
    return [*cmd, "--"]


def ensure_bind_mount_in(mntns: Path, src: Path, dst: Path) -> None:
    """Inside mount ns *mntns*, bind *src* onto *dst* unless something is mounted there."""
    src.mkdir(parents=True, exist_ok=True)
    # field 5 of mountinfo is the mount point: bind only if nothing is mounted on dst
    script = (
        'mkdir -p "$2"; awk -v t="$2" \'$5 == t {f = 1} END {exit !f}\' /proc/self/mountinfo'
        ' || mount --bind "$1" "$2"'
    )
    sh([*ns_prefix(None, mntns), "sh", "-c", script, "sh", str(src), str(dst)])


def run_in(
    cmd: Sequence[str],
    netns: str | None = None,
    mntns: Path | None = None,
    check: bool = True,
) -> str:
    """Run a short command in the given namespaces; return its stdout."""
    return sh([*ns_prefix(netns, mntns), *cmd], check=check)


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """A process we started: enough to find it again (and only it) from another process."""

    name: str
    pid: int
    starttime: int
    cmd: list[str]
    log: str
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """Serialisable form for the state file."""
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, object]) -> Proc:
        """Inverse of :meth:`to_json`."""
        return Proc(**data)  # type: ignore[arg-type]


def proc_starttime(pid: int) -> int | None:
    """Kernel start time (clock ticks, field 22 of /proc/PID/stat) or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # why: comm (field 2) may contain spaces; split after its closing paren.
    return int(stat.rsplit(")", 1)[1].split()[19])


def proc_state(pid: int) -> str | None:
    """One-letter process state (R, S, Z, …) or None if the pid does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def is_alive(proc: Proc) -> bool:
    """True if *proc* (same pid and start time) runs and is not a zombie."""
    if proc_starttime(proc.pid) != proc.starttime:
        return False
    return proc_state(proc.pid) not in (None, "Z", "X")


def start_process(
    name: str,
    cmd: Sequence[str],
    log: Path,
    netns: str | None = None,
    mntns: Path | None = None,
    env: dict[str, str] | None = None,
) -> Proc:
    """Start *cmd* detached, in the given namespaces, logging to *log*; return its Proc.

    nsenter (without --fork) execs the command, so the pid is the daemon's pid.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [*ns_prefix(netns, mntns), *cmd]
    with open(log, "ab") as out:
        # why: a new session keeps terminal signals (Ctrl-C of `up`) away from the
        # daemons; `down` stops them explicitly.
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    start = proc_starttime(p.pid)
    if start is None:
        raise RuntimeError(f"{name} exited at once; see {log}")
    return Proc(name=name, pid=p.pid, starttime=start, cmd=list(argv), log=str(log))


def _reap(pid: int) -> None:
    """waitpid(*pid*) if it is our child (no zombie left behind); ignore otherwise."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def signal_pid(pid: int, starttime: int | None, sig: int) -> None:
    """Send *sig* to *pid* only if it still has *starttime* (None: skip the check)."""
    if starttime is not None and proc_starttime(pid) != starttime:
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_pids(pids: Mapping[int, int | None], timeout: float = 10.0) -> list[int]:
    """SIGTERM pid→starttime pairs, wait up to *timeout*, then SIGKILL the rest.

    Returns the pids that needed SIGKILL.
    """
    for pid, start in pids.items():
        signal_pid(pid, start, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while True:
        for pid in pids:
            _reap(pid)
        left = [p for p in pids if proc_state(p) not in (None, "Z", "X")]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in left:
        signal_pid(pid, pids[pid], signal.SIGKILL)
    if left:
        time.sleep(0.2)
        for pid in left:
            _reap(pid)
    return left


def stop_process(proc: Proc, timeout: float = 10.0) -> None:
    """Stop *proc* by pid (TERM, then KILL after *timeout*); no-op if it is gone."""
    if proc_starttime(proc.pid) != proc.starttime:
        return
    stop_pids({proc.pid: proc.starttime}, timeout)


def ns_inode(nsfile: Path) -> int | None:
    """Inode of a namespace pinned on *nsfile* (or a /proc/PID/ns/* link), None if gone."""
    try:
        return os.stat(nsfile).st_ino
    except OSError:
        return None


def pids_in_ns(kind: str, inode: int) -> list[int]:
    """Pids (not zombies) whose namespace of *kind* ("net", "mnt") has *inode*.

    # why: this finds every process of a node, including the containerd shims
    that re-parent away from containerd, without matching process names.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if os.stat(entry / "ns" / kind).st_ino != inode:
                continue
        except OSError:
            continue
        if proc_state(int(entry.name)) not in (None, "Z", "X"):
            found.append(int(entry.name))
    return found


def pids_in_cgroup_tree(root: Path) -> list[int]:
    """Pids in cgroup dir *root* and all its descendants.

    # why os.walk: runc and the kubelet remove pod cgroups while we look;
    os.walk skips vanished dirs where Path.rglob raises.
    """
    found: list[int] = []
    for dirpath, _dirs, _files in os.walk(root):
        try:
            found += [int(x) for x in Path(dirpath, "cgroup.procs").read_text().split()]
        except OSError:
            continue
    return found


def rmdir_tree(root: Path) -> None:
    """Remove a cgroup directory tree bottom-up (cgroupfs only allows rmdir)."""
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        try:
            os.rmdir(dirpath)
        except FileNotFoundError:
            continue
