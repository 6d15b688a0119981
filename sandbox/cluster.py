"""``up`` / ``down`` / ``status`` of the sandbox cluster, with a JSON state file.

Everything ``up`` creates is recorded in ``STATE/state.json`` *before* it is
created (pids with their start times, netns, links, mounts, cgroup dirs, host
dirs, original kernel sysctls), so ``down`` from any later process removes
exactly that, even after a crash half-way through ``up``.

CLI: ``python -m sandbox.cluster up [--nodes N] | down | status``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sandbox import images, k8sbuild, netns
from sandbox.controlplane import (
    CP_NETNS,
    DEFAULT_POD_NETWORK,
    HOST_LINK,
    LEGACY_NETNS,
    ControlPlane,
    OnStart,
    PodNetwork,
)
from sandbox.netns import Proc
from sandbox.node import BIND_MOUNTS, InstallCni, Node, reference_cni

DEFAULT_STATE_DIR = Path("/var/lib/sluice-sandbox")
# why: the kubelet rewrites these machine-global sysctls at start; down restores them.
KERNEL_TUNABLES = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
CP_STOP_ORDER = (("kube-scheduler", "kube-controller-manager"), ("kube-apiserver",), ("etcd",))


def progress(msg: str) -> None:
    """One progress line on stdout."""
    print(f"[sandbox {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class StateFile:
    """The recorded state; every mutation is written to disk at once (atomically)."""

    LISTS = ("netns", "links", "mounts", "cgroups", "dirs")

    def __init__(self, state_dir: Path) -> None:
        """Load STATE/state.json if present, else start an empty record."""
        self.path = state_dir / "state.json"
        self.data: dict[str, Any] = {"version": 1, "state_dir": str(state_dir)}
        if self.path.exists():
            self.data = json.loads(self.path.read_text())
        for key in self.LISTS:
            self.data.setdefault(key, [])
        for key in ("processes", "nodes", "sysctls"):
            self.data.setdefault(key, {})

    def save(self) -> None:
        """Write the state file (tmp + rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        tmp.rename(self.path)

    def add(self, kind: str, item: str) -> None:
        """Record one resource of *kind* (one of LISTS)."""
        if item not in self.data[kind]:
            self.data[kind].append(item)
            self.save()

    def recorder(self, owner: str) -> OnStart:
        """An ``on_start(proc)`` callback recording procs under ``owner/name``."""

        def on_start(proc: Proc) -> None:
            """Record *proc* and print a progress line."""
            self.data["processes"][f"{owner}/{proc.name}"] = proc.to_json()
            self.save()
            progress(f"started {owner}/{proc.name} pid {proc.pid}")

        return on_start

    def procs(self, owner: str) -> dict[str, Proc]:
        """Recorded processes of *owner* ("cp" or a node name) by daemon name."""
        out = {}
        for key, value in self.data["processes"].items():
            if key.split("/", 1)[0] == owner:
                out[key.split("/", 1)[1]] = Proc.from_json(value)
        return out


# ---------------------------------------------------------------------------- up


def _up_control_plane(cp: ControlPlane, st: StateFile) -> None:
    """Fabric netns + host link + the legacy host, PKI, etcd and the three masters."""
    st.add("netns", CP_NETNS)
    st.add("links", HOST_LINK)
    st.add("netns", LEGACY_NETNS)
    cp.ensure_network()
    cp.ensure_legacy_host()
    cp.ensure_pki()
    cp.ensure_running(st.procs("cp"), st.recorder("cp"))
    cp.wait_ready()


def _save_kernel_tunables(st: StateFile) -> None:
    """Remember the original values once (before the first kubelet changes them)."""
    for key in KERNEL_TUNABLES:
        if key not in st.data["sysctls"]:
            st.data["sysctls"][key] = Path("/proc/sys", key).read_text().strip()
    st.save()


def _up_node_runtime(node: Node, st: StateFile, total: int, tars: dict[str, Path]) -> None:
    """Host-side set-up of *node*, then its containerd and kubelet."""
    st.data["nodes"][node.name] = node.index
    st.add("netns", node.netns)
    node.ensure_network()
    for path in node.cgroup_dirs():
        st.add("cgroups", str(path))
    node.ensure_cgroups()
    st.add("mounts", str(node.mntns))
    st.add("mounts", str(node.mntns.parent))
    for target in BIND_MOUNTS:
        if not Path(target).exists():
            st.add("dirs", target)  # a host dir we create as a mount point
    node.ensure_mounts()
    node.ensure_config(st.path.parent / "pki", total)
    node.start_runtime(st.procs(node.name), tars, st.recorder(node.name))


def wait_nodes_ready(cp: ControlPlane, names: list[str], timeout: float) -> dict[str, float]:
    """Poll until every node in *names* is Ready; return the monotonic time each was seen."""
    start, ready_at = time.monotonic(), {}
    while time.monotonic() - start < timeout:
        for name, ready in node_ready(cp).items():
            if ready and name in names and name not in ready_at:
                ready_at[name] = time.monotonic()
                progress(f"node {name} Ready")
        if len(ready_at) == len(names):
            return ready_at
        time.sleep(0.5)
    missing = sorted(set(names) - set(ready_at))
    raise TimeoutError(f"nodes not Ready after {timeout:.0f} s: {missing}")


def node_ready(cp: ControlPlane) -> dict[str, bool]:
    """Ready condition of every registered node (empty if the apiserver is down)."""
    out = cp.kubectl("get", "nodes", "-o", "json", check=False)
    try:
        items = json.loads(out)["items"]
    except (ValueError, KeyError):
        return {}
    result = {}
    for item in items:
        conds = item.get("status", {}).get("conditions", [])
        result[item["metadata"]["name"]] = any(
            c["type"] == "Ready" and c["status"] == "True" for c in conds
        )
    return result


def _up_nodes(
    st: StateFile, cp: ControlPlane, nodes: list[Node], install_cni: InstallCni, timeout: float
) -> dict[str, float]:
    """Bring up every node; return seconds from each kubelet's start to its node Ready."""
    tars = images.ensure_images()
    started = {}
    for node in nodes:
        progress(f"node {node.name} ({node.ip}): netns, cgroups, mounts, containerd, kubelet")
        _up_node_runtime(node, st, len(nodes), tars)
        started[node.name] = time.monotonic()
    for node in nodes:
        node.start_network(st.procs(node.name), cp, install_cni, st.recorder(node.name))
        progress(f"node {node.name}: podCIDR {node.pod_cidr}, CNI installed, kube-proxy")
    ready = wait_nodes_ready(cp, list(started), timeout)
    return {n: round(ready[n] - started[n], 1) for n in started}


def up(
    nodes: int = 3,
    state_dir: Path = DEFAULT_STATE_DIR,
    install_cni: InstallCni = reference_cni,
    cache_dir: Path = k8sbuild.DEFAULT_CACHE_DIR,
    timeout: float = 180.0,
    pod_network: PodNetwork = DEFAULT_POD_NETWORK,
    far_nodes: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Bring the cluster up (idempotent); return :func:`status` plus timings.

    ``pod_network`` sets the controller-manager's pod ranges (recorded; changing
    it needs ``down`` first); nodes named in ``far_nodes`` sit on the routed
    second subnet (see sandbox.controlplane).

    Side effects: see docs/sandbox.md.  With everything already running this
    only re-checks each piece (≈ 1.5 s) and returns the status.  ``timings_s``
    gives the control plane's start-up and, per node, kubelet start → Ready
    (near 0 for a node that was already running).
    """
    t0 = time.monotonic()
    bin_dir = k8sbuild.ensure_kubernetes(cache_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    st = StateFile(state_dir)
    st.data["bin_dir"] = str(bin_dir)
    _record_pod_network(st, pod_network)
    st.data["far_nodes"] = sorted(set(st.data.get("far_nodes", [])) | set(far_nodes))
    st.save()
    cp = ControlPlane(state_dir, bin_dir, pod_network=pod_network)
    progress("control plane (sl-cp)")
    _up_control_plane(cp, st)
    t_cp = time.monotonic()
    _save_kernel_tunables(st)
    cidr, far = pod_network.cluster_cidr, set(st.data["far_nodes"])
    names = [f"node{i}" for i in range(1, nodes + 1)]
    node_objs = [
        Node(n, i, state_dir, bin_dir, cluster_cidr=cidr, far=n in far)
        for i, n in enumerate(names, start=1)
    ]
    ready = _up_nodes(st, cp, node_objs, install_cni, timeout)
    result = status(state_dir)
    result["timings_s"] = {
        "control_plane": round(t_cp - t0, 1),
        "kubelet_start_to_node_ready": ready,
        "total": round(time.monotonic() - t0, 1),
    }
    progress(f"cluster up in {result['timings_s']['total']} s; kubeconfig {cp.admin_kubeconfig}")
    return result


# ---------------------------------------------------------------------------- status


def _rss_mib(pids: list[int]) -> float:
    """Sum of VmRSS of *pids*, MiB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


def _record_pod_network(st: StateFile, wanted: PodNetwork) -> None:
    """Record the pod network; refuse to change it under a running cluster."""
    recorded = recorded_pod_network(st)
    if st.data["nodes"] and recorded != wanted:
        raise SystemExit(
            f"the sandbox runs with pod network {recorded.cluster_cidr}; "
            f"{wanted.cluster_cidr} needs `sluicectl sandbox down` first"
        )
    st.data["pod_network"] = {"cluster_cidr": wanted.cluster_cidr, "mask": wanted.node_cidr_mask}
    st.save()


def recorded_pod_network(st: StateFile) -> PodNetwork:
    """The pod network the sandbox was brought up with (the default if none is recorded)."""
    data = st.data.get("pod_network")
    return PodNetwork(data["cluster_cidr"], data["mask"]) if data else DEFAULT_POD_NETWORK


def recorded_nodes(st: StateFile) -> list[Node]:
    """Node objects for every node recorded in *st*."""
    state_dir, bin_dir = Path(st.data["state_dir"]), Path(st.data.get("bin_dir", "."))
    cidr, far = recorded_pod_network(st).cluster_cidr, set(st.data.get("far_nodes", []))
    return [
        Node(n, i, state_dir, bin_dir, cluster_cidr=cidr, far=n in far)
        for n, i in sorted(st.data["nodes"].items())
    ]


def memory_report(st: StateFile) -> dict[str, float]:
    """RSS (MiB) of the control plane, each node's daemons+shims and its pods."""
    cp_pids = [p.pid for p in st.procs("cp").values() if netns.is_alive(p)]
    report = {"control-plane": _rss_mib(cp_pids)}
    for node in recorded_nodes(st):
        report[f"{node.name}-daemons"] = _rss_mib(node.daemon_pids())
        pods = sum((netns.pids_in_cgroup_tree(d) for d in node.cgroup_dirs()[:1]), [])
        report[f"{node.name}-pods"] = _rss_mib(pods)
    report["total"] = round(sum(report.values()), 1)
    return report


def status(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, Any]:
    """What is recorded and whether it runs: processes, apiserver, nodes, memory."""
    st = StateFile(state_dir)
    if not st.path.exists():
        return {"state_dir": str(state_dir), "running": False}
    procs = {k: Proc.from_json(v) for k, v in st.data["processes"].items()}
    cp = ControlPlane(state_dir, Path(st.data.get("bin_dir", ".")))
    apiserver = cp.is_ready() if procs else False
    return {
        "state_dir": str(state_dir),
        "running": bool(procs) and all(netns.is_alive(p) for p in procs.values()),
        "admin_kubeconfig": str(cp.admin_kubeconfig),
        "kubectl": str(cp.bin_dir / "kubectl"),
        "apiserver_ready": apiserver,
        "nodes_ready": node_ready(cp) if apiserver else {},
        "processes": {k: {"pid": p.pid, "alive": netns.is_alive(p)} for k, p in procs.items()},
        "memory_mib": memory_report(st),
    }


# ---------------------------------------------------------------------------- down


def _stop(what: str, pids: Mapping[int, int | None], timeout: float = 10.0) -> None:
    """stop_pids with a progress line naming what needed SIGKILL."""
    start = time.monotonic()
    killed = netns.stop_pids(pids, timeout)
    note = f"; SIGKILL: {killed}" if killed else ""
    progress(f"stopped {what} ({len(pids)} pids) in {time.monotonic() - start:.1f} s{note}")


def _kill_node_daemons(st: StateFile) -> None:
    """Stop kube-proxy/kubelet, then containerd + shims (all of each node's mount ns)."""
    nodes = recorded_nodes(st)
    first = {}
    for node in nodes:
        for name in ("kube-proxy", "kubelet"):
            proc = st.procs(node.name).get(name)
            if proc is not None:
                first[proc.pid] = proc.starttime
    _stop("kube-proxy, kubelet", first)
    rest: dict[int, int | None] = {}
    for node in nodes:
        proc = st.procs(node.name).get("containerd")
        if proc is not None:
            rest[proc.pid] = proc.starttime
        rest.update({pid: netns.proc_starttime(pid) for pid in node.daemon_pids()})
    _stop("containerd + shims", rest, timeout=5)


def _kill_cgroup_members(st: StateFile, errors: list[str]) -> None:
    """Stop everything left in our cgroups (pod processes) until they are empty."""
    roots = [Path(p) for p in st.data["cgroups"]]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        pids = sorted({pid for r in roots for pid in netns.pids_in_cgroup_tree(r)})
        if not pids:
            return
        thawed = thaw_frozen_cgroups(roots)
        if thawed:
            progress(f"thawed frozen cgroups: {thawed}")
        _stop("pod processes", {pid: netns.proc_starttime(pid) for pid in pids}, timeout=1)
    errors.append(f"processes left in cgroups: {pids}")


def thaw_frozen_cgroups(roots: list[Path]) -> list[str]:
    """Thaw every frozen freezer cgroup under ``roots``; return the ones thawed.

    # why: runc freezes a container's cgroup while it kills it; if runc or its
    # shim is stopped in between, the cgroup stays FROZEN and its processes sleep
    # in the kernel, deaf even to SIGKILL (seen once in ~20 sandbox downs).
    """
    thawed = []
    for root in roots:
        for state in sorted(root.rglob("freezer.state")) if root.is_dir() else ():
            try:
                if state.read_text().strip() != "THAWED":
                    state.write_text("THAWED")
                    thawed.append(str(state.parent.relative_to(root)))
            except OSError:  # the cgroup went away meanwhile
                continue
    return thawed


def _kill_control_plane(st: StateFile) -> None:
    """Stop the control plane in dependency order, then anything else left in sl-cp."""
    procs = st.procs("cp")
    # why ordered: a SIGTERMed apiserver removes itself from the kubernetes
    # Endpoints in etcd; with etcd already gone it hangs until SIGKILL (10 s).
    for group in CP_STOP_ORDER:
        pids = {p.pid: p.starttime for n, p in procs.items() if n in group}
        _stop(", ".join(group), pids)
    inode = netns.ns_inode(netns.netns_path(CP_NETNS))
    left = netns.pids_in_ns("net", inode) if inode is not None else []
    if left:
        _stop(f"other processes in {CP_NETNS}", {p: netns.proc_starttime(p) for p in left})


def _remove_recorded(st: StateFile, errors: list[str]) -> None:
    """cgroup dirs, mounts, netns, links, host dirs, sysctls (in that order)."""
    steps: list[tuple[str, Any]] = [
        *(("cgroup " + c, lambda c=c: netns.rmdir_tree(Path(c))) for c in st.data["cgroups"]),
        # deepest first: a node's mount-ns file before the private dir holding it
        *(
            ("mount " + m, lambda m=m: netns.unmount_if_mounted(Path(m)))
            for m in sorted(st.data["mounts"], key=len, reverse=True)
        ),
        *(("netns " + n, lambda n=n: netns.delete_netns_if_exists(n)) for n in st.data["netns"]),
        *(("link " + ln, lambda ln=ln: netns.delete_link_if_exists(ln)) for ln in st.data["links"]),
        *(("dir " + d, lambda d=d: _rmdir_if_empty(Path(d))) for d in st.data["dirs"]),
    ]
    for what, step in steps:
        try:
            step()
        except (OSError, RuntimeError) as exc:
            errors.append(f"{what}: {exc}")
    for key, value in st.data["sysctls"].items():
        try:
            Path("/proc/sys", key).write_text(value)
        except OSError as exc:
            errors.append(f"sysctl {key}: {exc}")


def _rmdir_if_empty(path: Path) -> None:
    """rmdir *path* if it exists and is empty (a host dir we created as mount point)."""
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()


def down(state_dir: Path = DEFAULT_STATE_DIR) -> list[str]:
    """Remove everything recorded in the state file, then the state dir.

    Continues past failures; returns the list of problems (empty = all gone)
    and keeps the state dir if there were any, so ``down`` can be re-run.
    """
    t0 = time.monotonic()
    st = StateFile(state_dir)
    if not st.path.exists():
        progress(f"nothing recorded in {state_dir}")
        return []
    errors: list[str] = []
    stages = (
        ("node daemons", lambda: _kill_node_daemons(st)),
        ("pod processes", lambda: _kill_cgroup_members(st, errors)),
        ("control plane", lambda: _kill_control_plane(st)),
        ("recorded resources", lambda: _remove_recorded(st, errors)),
    )
    for what, stage in stages:
        try:
            stage()
        except Exception as exc:  # why: keep going, later stages still clean up
            errors.append(f"{what}: {type(exc).__name__}: {exc}")
    if errors:
        progress("down incomplete: " + "; ".join(errors))
        return errors
    shutil.rmtree(state_dir, ignore_errors=True)
    progress(f"down in {time.monotonic() - t0:.1f} s")
    return errors


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.cluster")
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    args = parser.parse_args(argv)
    if args.command == "up":
        print(json.dumps(up(args.nodes, args.state_dir), indent=1))
    elif args.command == "down":
        return 1 if down(args.state_dir) else 0
    else:
        print(json.dumps(status(args.state_dir), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
