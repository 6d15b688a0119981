"""Helpers shared by the e2e modules that run a Sluice sandbox: probes, REST, leak checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sandbox import cluster, netns
from sandbox.node import Node
from sandbox.sluice_node import find_interfaces

REST_URL = "http://127.0.0.1:9595"  # sluice-controller's REST API, inside each node netns

# Run with the host's python inside a pod netns: connect to each target and
# print {key: reply or "!Error"} (the workload answers its pod name).
PROBE_SCRIPT = r"""
import json, socket, sys, threading
proto, port, timeout, tries = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
targets = json.loads(sys.argv[5])
res = {}
def one(key, ip):
    for _ in range(tries):
        s = None
        try:
            if proto == "TCP":
                s = socket.create_connection((ip, port), timeout=timeout)
                s.settimeout(timeout)
                data = s.recv(1024)
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.settimeout(timeout)
                s.sendto(b"hostname?\n", (ip, port))
                data = s.recvfrom(1024)[0]
            res[key] = data.decode(errors="replace").strip()
            return
        except OSError as e:
            res[key] = "!" + type(e).__name__
        finally:
            if s is not None:
                s.close()
ts = [threading.Thread(target=one, args=kv) for kv in targets.items()]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps(res))
"""


def pod_netns_paths(node: Node) -> dict[str, str]:
    """pod "ns/name" → netns path, from the node's OVSDB (as sandbox/cli.py pod_netns)."""
    out = find_interfaces(node, "external_ids:sluice-owner=cni")
    found = {}
    for (ext,) in json.loads(out)["data"]:
        ids = dict(ext[1])
        if ids.get("sluice-netns"):
            found[f"{ids['sluice-pod-namespace']}/{ids['sluice-pod-name']}"] = ids["sluice-netns"]
    return found


def enter_pod(node: Node, path: str) -> list[str]:
    """Command prefix that runs a host tool inside a pod's netns on *node*."""
    return ["nsenter", f"--mount={node.mntns}", "--", "nsenter", f"--net={path}", "--"]


def enter_netns(name: str) -> list[str]:
    """Command prefix that runs a host tool inside netns *name* (a node, sl-legacy)."""
    return ["nsenter", f"--net={netns.netns_path(name)}", "--"]


def probe(
    enter: list[str], proto: str, port: int, targets: dict[str, str], timeout: float, tries: int
) -> dict[str, str]:
    """Connect from the netns *enter* leads into to every target; key → reply or "!Error"."""
    cmd = [
        *enter, sys.executable, "-c", PROBE_SCRIPT,
        proto, str(port), str(timeout), str(tries), json.dumps(targets),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def ping(enter: list[str], ips: list[str], tries: int = 5) -> dict[str, int]:
    """Ping each IP from the netns *enter* leads into, in parallel; IP → tries needed (tries+1 =
    never answered)."""

    def one(ip: str) -> tuple[str, int]:
        for n in range(tries):
            cmd = [*enter, "ping", "-c1", "-W1", ip]
            if subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0:
                return ip, n
        return ip, tries + 1

    with ThreadPoolExecutor(max_workers=max(1, len(ips))) as pool:
        return dict(pool.map(one, ips))


def rest_get(node: str, path: str) -> tuple[int, Any]:
    """GET the controller's REST API from inside the node's netns: (status, JSON body)."""
    code = (
        "import json,sys,urllib.request,urllib.error\n"
        "try:\n"
        f"    r = urllib.request.urlopen({REST_URL + path!r}, timeout=3)\n"
        "    print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code); print(e.read().decode())\n"
    )
    out = netns.sh([*enter_netns(f"sl-{node}"), sys.executable, "-c", code])
    status, _, body = out.partition("\n")
    return int(status), json.loads(body)


def wait_for(what: str, cond: Any, timeout: float, interval: float = 0.5, fail: bool = True) -> Any:
    """Poll *cond()* until truthy; return its value; after *timeout* s fail (or return it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            if fail:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            return value
        time.sleep(interval)


def live_sandbox_pids(state_dir: Path) -> set[int]:
    """Every live process of the sandbox: recorded daemons, node mount-ns members, pods."""
    st = cluster.StateFile(state_dir)
    pids = {p["pid"] for p in st.data["processes"].values()}
    for node in cluster.recorded_nodes(st):
        pids.update(node.daemon_pids())
        for cg in node.cgroup_dirs():
            pids.update(netns.pids_in_cgroup_tree(cg))
    return {p for p in pids if netns.proc_state(p) not in (None, "Z", "X")}


def pids_mentioning(text: str) -> list[int]:
    """Live pids whose command line mentions *text* (e.g. the state dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and netns.proc_state(int(proc.name)) not in (None, "Z", "X"):
            found.append(int(proc.name))
    return found


def down_and_check(state_dir: Path, pids: set[int]) -> None:
    """``down()`` the sandbox and assert nothing of it is left (netns, pids, mounts, dir)."""
    errors = cluster.down(state_dir)
    assert errors == []
    assert netns.list_netns("sl-") == []
    assert [p for p in pids if netns.proc_state(p) not in (None, "Z", "X")] == []
    assert pids_mentioning(str(state_dir)) == []
    assert netns.mounts_under(state_dir) == []
    assert not state_dir.exists()
