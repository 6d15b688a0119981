"""Benchmark 6: pod network-ready latency, from the CNI ADD's return to a TCP reply.

The real sandbox (``sandbox.cluster``: 3 nodes, each with kubelet, containerd,
OVS and sluice-controller) runs Sluice in overlay mode (VXLAN). One prober pod
per node; ``bench/netready_prober.py`` runs with the host's python inside each
prober pod's netns. Then 100 pods on node2 and 100 on node3 are created with
kubectl, in batches (a node admits at most 110 pods):

* ``ovsdb-client monitor`` on node2's and node3's OVSDB sees each new pod's
  port as the CNI commits it (Interface external_ids ``sluice-ips``); its IP is
  fed at once to node1's prober (across the VXLAN tunnel) and, as the
  reference in the same run, to the prober on the pod's own node (local path);
* each prober connects to the closed port 9 of every IP it is fed every few
  milliseconds until the pod's kernel answers (RST, or an accept): the first
  TCP reply, with no process in the pod involved. The probers' netns retry ARP
  every 10 ms instead of every second: on the same node the target is on the
  prober's subnet, and an ARP request sent before the pod's flows exist would
  otherwise hold the reference's SYNs back for a second (measured: ~1 s);
* the ADD's return is the wallclock of sluice-controller's log line
  ``CNI ADD <cid>/<ifname> rc=0 in X ms`` (logged when the CNI server has the
  result, just before it answers the ``sluice`` binary; millisecond precision).

Reported per path: latency = reply - ADD return (p50/p99/max over all pods, a
pod never ready within 10 s counted as 10 s), how many were ready before the
ADD returned or at the first probe (then the latency is an upper bound), and
the ratio of the cross-node path to the same-node path. Two references from
the same monitor: when the pod's row was seen (the probing starts then) and
when ovs-vswitchd numbered its port; two from sluice-controller's log: when it
learnt the pod (``controller.podwatch``) and when the switch answered the
barrier after the pod's flows (``pod flows installed``), whose difference is
the controller's share (``breakdown.stages``). The run starts once every
node's controller answers ``/readyz`` (its podCIDR known). A
second table gives the medians by the pod's number on its node (the trend with
the node's pod count), and the CPU time of the probers, controllers and
vswitchds while the pods were made (bench.netready_report builds the record).

The sandbox's names (``sl-*``) are fixed, so the run holds
``/tmp/sluice-sandbox.lock`` (also when its caller already holds it through
``flock``) and refuses to start while another sandbox is up; its own state dir
is ``/var/lib/sluice-sandbox-bench-netready``, brought ``down`` at the end.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from bench.common import wait_until
from bench.netready_report import SOURCE, Sample, report
from bench.netready_watch import (
    ARP_RETRANS_MS,
    DEADLINE_S,
    PROBE_EVERY_S,
    PROBE_PORT,
    SOCKET_TTL_S,
    PortRow,
    Prober,
    add_returns,
    controller_stages,
    find_rows,
    ovsdb_monitor,
    sandbox_lock,
)
from bench.procstat import cpu_seconds
from ovsdb import schema
from sandbox import cluster, netns
from sandbox.cli import FetchError, command_fetch, controller_url
from sandbox.controlplane import ControlPlane
from sandbox.images import PAUSE_IMAGE
from sandbox.node import Node
from sandbox.sluice_node import SluiceCni, find_interfaces

STATE_DIR = Path("/var/lib/sluice-sandbox-bench-netready")
TARGETS = ("node2", "node3")  # the new pods' nodes; the remote prober is on SOURCE
POD_PREFIX = "nr-"
BATCH_TIMEOUT_S = 180.0
READY_TIMEOUT_S = 120.0


def sizes(quick: bool) -> tuple[int, int]:
    """(pods per target node, pods per node in one batch)."""
    return (2, 2) if quick else (100, 10)


# ---------------------------------------------------------------------------- the run


def pod_body(name: str, node: str, app: str) -> dict[str, Any]:
    """A bare pod pinned to ``node`` (the pause image: nothing listens, port 9 is closed)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "containers": [{"name": "c", "image": PAUSE_IMAGE, "imagePullPolicy": "Never"}],
        },
    }


def apply(cp: ControlPlane, bodies: list[dict[str, Any]]) -> None:
    """kubectl apply a list of objects."""
    cp.kubectl(
        "apply", "-f", "-", input_=json.dumps({"apiVersion": "v1", "kind": "List", "items": bodies})
    )


def node_ports(node: Node) -> list[PortRow]:
    """The pod ports in a node's OVSDB now."""
    return find_rows(find_interfaces(node, f"external_ids:{schema.OWNER}={schema.OWNER_CNI}"))


def start_cluster(stack: ExitStack, down_errors: list[str]) -> tuple[ControlPlane, dict[str, Node]]:
    """The 3-node overlay sandbox in STATE_DIR, downed when ``stack`` closes."""
    if netns.list_netns("sl-"):
        raise RuntimeError(
            f"another sandbox is up (netns {netns.list_netns('sl-')}); not touching it"
        )
    if (STATE_DIR / "state.json").exists():  # a leftover of an interrupted run of ours
        down_errors.extend(cluster.down(STATE_DIR))
    stack.callback(lambda: down_errors.extend(cluster.down(STATE_DIR)))
    result = cluster.up(3, STATE_DIR, install_cni=SluiceCni(STATE_DIR / "admin.kubeconfig"))
    cp = ControlPlane(STATE_DIR, Path(result["kubectl"]).parent)
    nodes = {n.name: n for n in cluster.recorded_nodes(cluster.StateFile(STATE_DIR))}
    for node in nodes.values():
        what = f"{node.name}'s controller to be ready"
        wait_until(partial(controller_ready, node), READY_TIMEOUT_S, what, step=0.2)
    return cp, nodes


def controller_ready(node: Node) -> bool:
    """Whether the node's sluice-controller answers /readyz with 200 (podCIDR known...).

    # why: the sandbox is up once every kubelet reports Ready, which does not
    # wait for the controller to learn its podCIDR from the Node object; an ADD
    # before that fails ("podCIDR not known yet") and the kubelet retries later.
    """
    fetch = command_fetch(["nsenter", f"--net=/run/netns/{node.netns}", "--"])
    try:
        status, _ = fetch(controller_url(node) + "/readyz")
    except FetchError:
        return False
    return status == 200


def start_probers(
    stack: ExitStack, cp: ControlPlane, nodes: dict[str, Node], workdir: Path
) -> dict[str, Prober]:
    """One prober pod per node, a prober in each; warmed up by probing one another."""
    apply(cp, [pod_body(f"{POD_PREFIX}probe-{n}", n, "netready-probe") for n in nodes])
    cp.kubectl("wait", "--for=condition=Ready", "pod", "-l", "app=netready-probe", "--timeout=180s")
    probers, ips = {}, {}
    for name, node in nodes.items():
        row = next(r for r in node_ports(node) if r.pod == f"default/{POD_PREFIX}probe-{name}")
        enter = ["nsenter", f"--mount={node.mntns}", "--", "nsenter", f"--net={row.netns}", "--"]
        probers[name] = Prober(enter, workdir / f"prober-{name}.log")
        stack.callback(probers[name].close, 1.0)
        ips[name] = row.ip
    # why warm up: the first packet toward a new tunnel neighbour may be lost.
    for name, prober in probers.items():
        for other, ip in ips.items():
            if other != name:
                prober.write(ip)
    for name, prober in probers.items():
        others = [ip for other, ip in ips.items() if other != name]
        wait_until(partial(_answered, prober, others), DEADLINE_S + 5, f"warm-up of {name}")
        if not all(prober.results[ip].ok for ip in others):
            raise RuntimeError(
                f"the prober on {name} cannot reach the other probers: {prober.results}"
            )
    return probers


def _answered(prober: Prober, ips: list[str]) -> bool:
    return all(ip in prober.results for ip in ips)


class Feeder:
    """Feeds each new pod's IP to its two probers the moment its port shows up in OVSDB."""

    def __init__(self, probers: dict[str, Prober]) -> None:
        self.probers = probers
        self.rows: dict[str, tuple[PortRow, float]] = {}  # pod name -> row, wallclock seen
        self.ofports: dict[str, float] = {}  # pod name -> wallclock its ofport was seen
        self._lock = threading.Lock()

    def on_row(self, node: str, row: PortRow, wallclock: float) -> None:
        """Called by node ``node``'s OVSDB monitor for every pod port row it prints."""
        name = row.pod.removeprefix("default/")
        if not name.startswith(f"{POD_PREFIX}{node}-"):
            return
        with self._lock:
            if row.ofport is not None:
                self.ofports.setdefault(name, wallclock)
            if name in self.rows:
                return
            self.rows[name] = (row, wallclock)
        self.probers[SOURCE].write(row.ip)
        self.probers[node].write(row.ip)

    def done(self, name: str, node: str) -> bool:
        """Whether both probers have a verdict on pod ``name``."""
        got = self.rows.get(name)
        return got is not None and all(got[0].ip in self.probers[n].results for n in (SOURCE, node))


def run_batches(cp: ControlPlane, feeder: Feeder, per_node: int, batch: int) -> dict[str, str]:
    """Create the pods, ``batch`` per target node at a time; return pod name -> node."""
    created: dict[str, str] = {}
    for start in range(0, per_node, batch):
        names = {
            f"{POD_PREFIX}{node}-{i:03d}": node
            for node in TARGETS
            for i in range(start, min(start + batch, per_node))
        }
        apply(cp, [pod_body(name, node, "netready") for name, node in names.items()])
        created.update(names)
        deadline = time.monotonic() + BATCH_TIMEOUT_S
        # why no error on time-out: pods never plugged are reported, not fatal.
        while time.monotonic() < deadline and not all(feeder.done(*kv) for kv in names.items()):
            time.sleep(0.05)
    return created


def collect(
    feeder: Feeder, nodes: dict[str, Node], created: dict[str, str]
) -> tuple[list[Sample], dict[str, list[str]]]:
    """Join rows, ADD returns (controller logs) and verdicts per pod; list what is missing."""
    logs = {name: nodes[name].log("sluice-controller").read_text() for name in TARGETS}
    adds = {(name, cid): t for name in TARGETS for cid, t in add_returns(logs[name]).items()}
    stages = {name: controller_stages(logs[name]) for name in TARGETS}
    samples: list[Sample] = []
    missing: dict[str, list[str]] = {"not_plugged": [], "no_add_log_line": []}
    for name, node in sorted(created.items()):
        got = feeder.rows.get(name)
        if got is None:
            missing["not_plugged"].append(name)
            continue
        row, seen = got
        t_add = adds.get((node, row.container_id[:12]))
        if t_add is None:
            missing["no_add_log_line"].append(name)
            continue
        samples.append(
            Sample(
                pod=name,
                node=node,
                index=int(name.rsplit("-", 1)[1]),
                add_return=t_add,
                row_seen=seen,
                ofport_seen=feeder.ofports.get(name),
                remote=feeder.probers[SOURCE].results.get(row.ip),
                local=feeder.probers[node].results.get(row.ip),
                pod_seen=stages[node][0].get(row.pod),
                flows_installed=stages[node][1].get(row.container_id[:12]),
            )
        )
    return samples, {k: v for k, v in missing.items() if v}


def start_monitors(stack: ExitStack, feeder: Feeder, nodes: dict[str, Node], workdir: Path) -> None:
    """An OVSDB monitor per target node, feeding ``feeder``; live once this returns."""
    for name in TARGETS:
        on_row = partial(feeder.on_row, name)
        db_sock = nodes[name].dir / "ovs" / "db.sock"
        mon = ovsdb_monitor(db_sock, on_row, workdir / f"monitor-{name}.log")
        stack.callback(mon.close, 0.0)
        # why: pods are created only once the monitor has printed its initial rows.
        wait_until(mon.has_output, 10.0, f"the OVSDB monitor of {name}")


def watched_pids(probers: dict[str, Prober]) -> dict[str, int]:
    """The processes whose CPU time the run reports: probers, controllers, vswitchds."""
    st = cluster.StateFile(STATE_DIR)
    pids = {f"prober on {name}": p.proc.pid for name, p in probers.items()}
    for name in TARGETS:
        for daemon in ("sluice-controller", "ovs-vswitchd"):
            pids[f"{daemon} on {name}"] = st.procs(name)[daemon].pid
    return pids


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each process (NaN once it is gone)."""
    out = {}
    for key, pid in pids.items():
        try:
            out[key] = cpu_seconds(pid)
        except OSError:
            out[key] = float("nan")
    return out


def describe(per_node: int, batch: int, pods_s: float) -> dict[str, Any]:
    """The ``params`` of the record."""
    return {
        "mode": "overlay (VXLAN), sandbox of 3 nodes (kubelet + containerd + OVS netdev)",
        "new_pods": f"{per_node} on each of {', '.join(TARGETS)}",
        "probers": f"on {SOURCE} (other node) and on the pod's own node (reference)",
        "batch": f"{batch} per node, next batch once every pod has both verdicts",
        "probe": f"TCP SYN to port {PROBE_PORT} every {PROBE_EVERY_S * 1000:g} ms, socket kept "
        f"{SOCKET_TTL_S * 1000:g} ms, deadline {DEADLINE_S:g} s; the probers' netns retry ARP "
        f"every {ARP_RETRANS_MS} ms (kernel default: 1 s)",
        "add_return": "wallclock of sluice-controller's `CNI ADD ... rc=0` log line (ms precision)",
        "pods_created_and_probed_s": round(pods_s, 1),
    }


def keep_logs(nodes: dict[str, Node], samples: list[Sample], workdir: Path) -> None:
    """Controller logs and per-pod samples into the work dir (kept with --keep-workdir)."""
    for name in TARGETS:
        shutil.copy(nodes[name].log("sluice-controller"), workdir / f"controller-{name}.log")
    (workdir / "samples.json").write_text(json.dumps([asdict(s) for s in samples], indent=1))


def run(workdir: Path, quick: bool = False) -> dict[str, Any]:
    """Run the network-ready benchmark in its own sandbox; return its result record."""
    per_node, batch = sizes(quick)
    workdir.mkdir(parents=True, exist_ok=True)
    down_errors: list[str] = []
    with sandbox_lock(), ExitStack() as stack:
        cp, nodes = start_cluster(stack, down_errors)
        probers = start_probers(stack, cp, nodes, workdir)
        feeder = Feeder(probers)
        start_monitors(stack, feeder, nodes, workdir)
        pids = watched_pids(probers)
        cpu_before, started = cpu_of(pids), time.monotonic()
        created = run_batches(cp, feeder, per_node, batch)
        pods_s = time.monotonic() - started
        cpu = {k: round(v - cpu_before[k], 1) for k, v in cpu_of(pids).items()}
        for prober in probers.values():
            prober.close(DEADLINE_S + 5)
        samples, errors = collect(feeder, nodes, created)
        keep_logs(nodes, samples, workdir)
    if down_errors:
        errors["sandbox_down"] = down_errors
    result = report(samples, describe(per_node, batch, pods_s), errors, batch)
    result["breakdown"]["cpu_s_while_the_pods_were_made"] = cpu
    return result
