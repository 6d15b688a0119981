"""Acceptance test of the sandbox with Sluice as the pod network (overlay, VXLAN).

Brings up a real 3-node Kubernetes v1.20.2 cluster (``sandbox.cluster.up``)
whose nodes each run their own OVS (userspace datapath), the ``sluice`` CNI
binary and ``sluice-controller`` (``sandbox.sluice_node.SluiceCni``), then
checks, in this order: nodes and controllers ready; a Deployment spread over
the nodes; full-mesh ICMP/TCP/UDP across nodes; exec/logs; a ClusterIP Service
whose backends are on the two other nodes; an apiserver restart (a new pod gets
connectivity at once); deleting the Deployment (every CNI DEL succeeds, no OVS
port or IPAM lease is left); the controllers' informers in the minute after
the restart; ``up()`` again; and at teardown that ``down()`` left nothing.


Run (root, ~2 min with the Kubernetes binaries cached):
    SLUICE_E2E=1 .venv/bin/pytest -s -m e2e tests/e2e/test_sandbox_sluice.py
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox import cluster, k8sbuild, netns
from sandbox.controlplane import CP_NETNS, ControlPlane
from sandbox.sluice_node import SluiceCni
from tests.e2e.kube import apply, pod_cidrs, pods
from tests.e2e.sandboxlib import live_sandbox_pids, pids_mentioning, rest_get, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("SLUICE_E2E") != "1", reason="set SLUICE_E2E=1 (root)"),
]

STATE_DIR = Path(
    os.environ.get("SLUICE_E2E_SLUICE_STATE_DIR", "/var/lib/sluice-sandbox-e2e-sluice")
)
NODES = 3
NODE_NAMES = [f"node{i}" for i in range(1, NODES + 1)]
REPLICAS = 6
IMAGE = "localhost/sluice/workload:latest"
# why: the first packet towards a node not seen before is lost while the tunnel
# neighbour is resolved, so each ping pair gets a few tries (1 s each).
PING_TRIES = 5
# Informer relists allowed per node in the minute after the apiserver restart
# (one is expected: the new apiserver's watch cache starts after our version).
MAX_RELISTS = 3
# A pod created right after the restart must reach another node within this.
RESTART_CONNECT_S = 10.0
DEL_DEADLINE_S = 120.0  # delete → pods gone, DELs settled, ports and leases removed
DEL_QUIET_S = 10.0  # "settled": no new CNI DEL line for this long
CNI_LINE = re.compile(r"CNI (?P<cmd>[A-Z]+) (?P<cid>[0-9a-f]*)/(?P<ifname>\S*) rc=(?P<rc>\d+)")
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) (\S+): (.*)$")

TIMINGS: dict[str, Any] = {}
BUILD_NOTE = "cached" if not k8sbuild.missing_binaries() else "built during up"


def install_cni() -> SluiceCni:
    """The hook that makes Sluice the cluster's network (as in docs/sandbox.md)."""
    return SluiceCni(STATE_DIR / "admin.kubeconfig", mode="overlay", tunnel="vxlan")


@dataclass
class Restart:
    """What test_apiserver_restart leaves for the informer checks after it."""

    stopped_at: datetime | None = None  # wall clock (local, like the controller logs)
    ready_at: datetime | None = None
    log_offsets: dict[str, int] = field(default_factory=dict)


RESTART = Restart()


# ---------------------------------------------------------------------------- helpers


def workload(name: str, labels: dict[str, str], node: str | None = None) -> dict[str, Any]:
    """Pod spec (template) running the workload image, optionally pinned to *node*."""
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 2,
        "containers": [{"name": "w", "image": IMAGE, "imagePullPolicy": "Never"}],
    }
    if node is not None:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {"metadata": {"name": name, "labels": labels}, "spec": spec}


def pod(name: str, labels: dict[str, str], node: str) -> dict[str, Any]:
    """A bare workload Pod pinned to *node*."""
    return {"apiVersion": "v1", "kind": "Pod", **workload(name, labels, node)}


DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "workload"},
    "spec": {
        "replicas": REPLICAS,
        "selector": {"matchLabels": {"app": "workload"}},
        "template": {
            "metadata": {"labels": {"app": "workload"}},
            "spec": {
                **workload("x", {})["spec"],
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": {"app": "workload"}},
                    }
                ],
            },
        },
    },
}

SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "svc-backend"},
    "spec": {
        "selector": {"role": "svc-backend"},
        "ports": [
            {"name": "tcp", "port": 8000, "targetPort": 80, "protocol": "TCP"},
            {"name": "udp", "port": 8001, "targetPort": 81, "protocol": "UDP"},
        ],
    },
}


def kubectl(cp: ControlPlane, *args: str, timeout: float = 60, check: bool = True) -> str:
    """The sandbox's kubectl as cluster-admin, bounded by *timeout*; return stdout."""
    cmd = [
        str(cp.bin_dir / "kubectl"),
        f"--kubeconfig={cp.admin_kubeconfig}",
        f"--cache-dir={STATE_DIR / 'kubectl-cache'}",
        *args,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {res.stderr.strip()}")
    return res.stdout


def sh_in_pod(cp: ControlPlane, name: str, script: str, timeout: float = 60) -> str:
    """Run a busybox sh *script* in pod *name*; return stdout (any exit code)."""
    return kubectl(cp, "exec", name, "--", "sh", "-c", script, timeout=timeout, check=False)


def node_dir(node: str) -> Path:
    """STATE/nodes/NAME."""
    return STATE_DIR / "nodes" / node


def controller_log(node: str) -> Path:
    """The node's sluice-controller log."""
    return node_dir(node) / "logs" / "sluice-controller.log"


def cni_lines(node: str, command: str) -> list[re.Match[str]]:
    """Every ``CNI <command> …`` line the node's CNI server logged."""
    text = controller_log(node).read_text(errors="replace")
    return [m for m in CNI_LINE.finditer(text) if m["cmd"] == command]


def log_records(node: str, offset: int = 0) -> list[tuple[datetime, str, str, str]]:
    """(time, level, logger, message) of the controller log from byte *offset* on."""
    with controller_log(node).open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    out = []
    for line in text.splitlines():
        m = LOG_TIME.match(line)
        if m:
            when = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f")
            out.append((when, m[2], m[3], m[4]))
    return out


def cni_interfaces(node: str) -> dict[str, dict[str, str]]:
    """OVS Interfaces of pods (external_ids sluice-owner=cni): name → external_ids."""
    out = netns.sh(
        [
            "ovs-vsctl",
            f"--db=unix:{node_dir(node) / 'ovs' / 'db.sock'}",
            "--timeout=10",
            "--format=json",
            "--columns=name,external_ids",
            "find",
            "Interface",
            "external_ids:sluice-owner=cni",
        ]
    )
    rows = json.loads(out)["data"]
    return {name: dict(ids[1]) for name, ids in rows}


def leases(node: str) -> dict[str, str]:
    """Default IPAM (host-local) leases of the node: IP → container id (first line)."""
    found = {}
    for path in (node_dir(node) / "sluice" / "state" / "ipam" / "sluice").glob("*"):
        try:
            ipaddress.ip_address(path.name)
        except ValueError:
            continue  # lock, last_reserved_ip.0
        found[path.name] = path.read_text().splitlines()[0].strip()
    return found


def nat_counters(node: str, comment: str) -> int:
    """Packets through the node's kube-proxy DNAT rules whose comment is *comment*."""
    out = netns.sh(
        ["nsenter", f"--net={netns.netns_path(f'sl-{node}')}", "iptables-save", "-c", "-t", "nat"]
    )
    total = 0
    for line in out.splitlines():
        if f'"{comment}"' in line and "-j DNAT" in line:
            total += int(line[1:].split(":", 1)[0])
    return total


# ---------------------------------------------------------------------------- fixture


def _up_with_one_retry() -> dict[str, Any]:
    """cluster.up() with Sluice; once more after down() if it hit the known db.sock race.

    # why: sandbox/sluice_node.ensure_ovs unlinks db.sock *after* starting
    # ovsdb-server, so now and then it deletes the fresh socket and up() times
    # out waiting for it (bug reported in docs/e2e.md).  Only that signature is
    # retried, loudly, and recorded in the timings.
    """
    try:
        return cluster.up(nodes=NODES, state_dir=STATE_DIR, install_cni=install_cni())
    except TimeoutError as exc:
        if "db.sock" not in str(exc):
            raise
        TIMINGS["up_retried_after"] = str(exc)
        print(f"\nWARNING: known ovsdb-server socket race in up(): {exc}; down() and up() again")
        assert cluster.down(STATE_DIR) == []
        return cluster.up(nodes=NODES, state_dir=STATE_DIR, install_cni=install_cni())


@pytest.fixture(scope="module")
def cp() -> Iterator[ControlPlane]:
    """The running sandbox with Sluice (up once per module); down() and leak checks at exit."""
    if netns.netns_path(CP_NETNS).exists():
        pytest.skip(f"netns {CP_NETNS} exists: another sandbox is running")
    start = time.monotonic()
    try:
        result = _up_with_one_retry()
        TIMINGS["up_s"] = round(time.monotonic() - start, 1)
        TIMINGS["up"] = result["timings_s"]
        TIMINGS["k8s_build"] = BUILD_NOTE
        yield ControlPlane(STATE_DIR, Path(result["kubectl"]).parent)
    finally:
        pids = live_sandbox_pids(STATE_DIR) if (STATE_DIR / "state.json").exists() else set()
        t0 = time.monotonic()
        errors = cluster.down(STATE_DIR)
        TIMINGS["down_s"] = round(time.monotonic() - t0, 1)
        print("\nE2E TIMINGS " + json.dumps(TIMINGS))
        assert errors == []
        assert netns.list_netns("sl-") == []
        assert [p for p in pids if netns.proc_state(p) not in (None, "Z", "X")] == []
        assert pids_mentioning(str(STATE_DIR)) == []
        assert netns.mounts_under(STATE_DIR) == []
        assert not STATE_DIR.exists()


# ---------------------------------------------------------------------------- tests


def test_nodes_and_controllers_ready(cp: ControlPlane) -> None:
    """3 nodes Ready, each with its own podCIDR; each controller ready and serving it."""
    assert cluster.node_ready(cp) == dict.fromkeys(NODE_NAMES, True)
    cidrs = pod_cidrs(cp)
    assert len(set(cidrs.values())) == NODES
    for node, cidr in cidrs.items():
        assert ipaddress.IPv4Network(cidr).subnet_of(ipaddress.IPv4Network("10.244.0.0/16"))
        status, body = rest_get(node, "/readyz")
        assert (status, body) == (200, {"status": "ready", "reasons": []}), node
        status, info = rest_get(node, "/v1/node")
        assert status == 200
        assert (info["name"], info["mode"], info["tunnel_type"]) == (node, "overlay", "vxlan")
        assert info["pod_cidrs"] == [cidr]


def test_deployment_spreads_over_nodes(cp: ControlPlane) -> None:
    """6 replicas Running, 2 per node, each IP inside its node's podCIDR."""
    start = time.monotonic()
    apply(cp, DEPLOYMENT)
    kubectl(cp, "rollout", "status", "deployment/workload", "--timeout=120s", timeout=130)
    TIMINGS["deployment_running_s"] = round(time.monotonic() - start, 1)
    items = pods(cp, "app=workload")
    assert len(items) == REPLICAS
    cidrs = pod_cidrs(cp)
    per_node: dict[str, int] = {}
    for p in items:
        assert p["status"]["phase"] == "Running"
        node, ip = p["spec"]["nodeName"], p["status"]["podIP"]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(cidrs[node]), (node, ip)
        per_node[node] = per_node.get(node, 0) + 1
    assert per_node == dict.fromkeys(NODE_NAMES, REPLICAS // NODES)


def _mesh_script(ping_ips: list[str], remote_ips: list[str]) -> str:
    """busybox sh: ping each IP (≤ PING_TRIES tries), TCP 80 / UDP 81 to each remote IP."""
    return (
        f"for ip in {' '.join(ping_ips)}; do n=0; "
        f"until ping -c1 -W1 $ip >/dev/null 2>&1; do n=$((n+1)); "
        f"[ $n -ge {PING_TRIES} ] && break; done; echo ping $ip $n; done; "
        f"for ip in {' '.join(remote_ips)}; do "
        "echo tcp $ip $(agnhost-lite connect --timeout 3 $ip:80 2>&1); done; "
        f"for ip in {' '.join(remote_ips)}; do "
        "r=$(agnhost-lite connect --udp --timeout 1 $ip:81 2>&1) || "
        "r=$(agnhost-lite connect --udp --timeout 1 $ip:81 2>&1); echo udp $ip $r; done"
    )


def test_full_mesh_icmp_tcp_udp(cp: ControlPlane) -> None:
    """Every pod pings every other pod; TCP 80 and UDP 81 reach every pod on other nodes."""
    items = pods(cp, "app=workload")
    ip_of = {p["metadata"]["name"]: p["status"]["podIP"] for p in items}
    name_of = {ip: name for name, ip in ip_of.items()}
    node_of = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in items}

    def probe(src: str) -> tuple[str, str]:
        others = [ip for n, ip in ip_of.items() if n != src]
        remote = [ip for n, ip in ip_of.items() if node_of[n] != node_of[src]]
        return src, sh_in_pod(cp, src, _mesh_script(others, remote), timeout=90)

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        results = dict(pool.map(probe, ip_of))
    TIMINGS["full_mesh_s"] = round(time.monotonic() - start, 1)
    failures, retried = [], 0
    for src, out in results.items():
        lines = [ln.split() for ln in out.splitlines() if ln.strip()]
        for kind, ip, *rest in lines:
            if kind == "ping":
                if int(rest[0]) >= PING_TRIES:
                    failures.append(f"ping {src} -> {name_of[ip]}: no reply")
                retried += int(rest[0]) > 0
            elif rest != [name_of[ip]]:
                failures.append(f"{kind} {src} -> {name_of[ip]}: {' '.join(rest)!r}")
        counts = {k: sum(1 for ln in lines if ln[0] == k) for k in ("ping", "tcp", "udp")}
        assert counts == {"ping": REPLICAS - 1, "tcp": 4, "udp": 4}, (src, out)
    TIMINGS["ping_pairs_needing_retry"] = retried
    assert failures == []


def test_exec_and_logs(cp: ControlPlane) -> None:
    """kubectl exec and kubectl logs reach every node's kubelet."""
    for p in pods(cp, "app=workload"):
        name = p["metadata"]["name"]
        assert kubectl(cp, "exec", name, "--", "hostname").strip() == name
        assert f"{name}: serving hostname" in kubectl(cp, "logs", name)


def _answers(cp: ControlPlane, client: str, target: str, udp: bool, tries: int = 12) -> list[str]:
    """Replies of *tries* connects from *client* to *target* (one kubectl exec)."""
    flag = "--udp --timeout 1" if udp else "--timeout 2"
    script = f"for i in $(seq {tries}); do agnhost-lite connect {flag} {target}; done"
    return sh_in_pod(cp, client, script).split()


def test_clusterip_backed_by_other_nodes(cp: ControlPlane) -> None:
    """A ClusterIP with backends on node2 and node3 answers a node1 pod over TCP and UDP.

    The counters of node1's kube-proxy DNAT rules show the client's own node
    translated the VIP.
    """
    backends = {"svc-b2": "node2", "svc-b3": "node3"}
    apply(cp, SERVICE, *(pod(n, {"role": "svc-backend"}, node) for n, node in backends.items()))
    kubectl(cp, "wait", "--for=condition=Ready", *(f"pod/{n}" for n in backends), "--timeout=60s")
    vip = kubectl(cp, "get", "svc", "svc-backend", "-o", "jsonpath={.spec.clusterIP}").strip()
    client = next(
        p["metadata"]["name"] for p in pods(cp, "app=workload") if p["spec"]["nodeName"] == "node1"
    )
    before = {k: nat_counters("node1", f"default/svc-backend:{k}") for k in ("tcp", "udp")}
    start = time.monotonic()
    # why poll: kube-proxy programs each endpoint asynchronously.
    tcp: set[str] = set()

    def both_over_tcp() -> bool:
        tcp.update(_answers(cp, client, f"{vip}:8000", False))
        return set(backends) <= tcp

    wait_for("both backends over TCP", both_over_tcp, timeout=30)
    TIMINGS["clusterip_both_backends_s"] = round(time.monotonic() - start, 1)
    udp: set[str] = set()
    for _ in range(3):
        udp.update(_answers(cp, client, f"{vip}:8001", True))
        if set(backends) <= udp:
            break
    assert tcp == set(backends) and udp == set(backends), (tcp, udp)
    after = {k: nat_counters("node1", f"default/svc-backend:{k}") for k in ("tcp", "udp")}
    assert after["tcp"] > before["tcp"] and after["udp"] > before["udp"], (before, after)


def test_apiserver_restart(cp: ControlPlane) -> None:
    """Stop kube-apiserver by pid, start it as up() does; a new pod reaches other nodes at once.

    The restart is the control-plane step of ``up()`` (``ensure_running``
    starts the dead component, then ``wait_ready``).  The whole of ``up()``
    is not re-run here: it also re-adds each node IP to eth0 (see
    test_up_again_keeps_node_network).  The informer checks on the controller
    logs run after the deletion test, once a full minute has passed.
    """
    st = cluster.StateFile(STATE_DIR)
    before = {k: v["pid"] for k, v in st.data["processes"].items()}
    api = st.procs("cp")["kube-apiserver"]
    assert netns.is_alive(api)
    RESTART.log_offsets = {n: controller_log(n).stat().st_size for n in NODE_NAMES}
    RESTART.stopped_at = datetime.now()
    t0 = time.monotonic()
    # why a short TERM timeout: a terminating apiserver waits for its open
    # watches; SIGKILL after 3 s is what a crash looks like anyway.
    netns.stop_pids({api.pid: api.starttime}, timeout=3)
    assert not netns.is_alive(api)
    assert not cp.is_ready()
    time.sleep(2)  # the controllers see refused connections for a moment
    cp.ensure_running(st.procs("cp"), st.recorder("cp"))
    cp.wait_ready()
    RESTART.ready_at = datetime.now()
    TIMINGS["apiserver_down_s"] = round(time.monotonic() - t0, 1)
    after = {k: v["pid"] for k, v in cluster.StateFile(STATE_DIR).data["processes"].items()}
    assert after.pop("cp/kube-apiserver") != before.pop("cp/kube-apiserver")
    assert after == before  # only the dead daemon was started
    # why: the new apiserver's watch cache sends bookmarks only once it has seen
    # an event of the kind, so touch every Node (the informers watch Nodes).
    kubectl(cp, "annotate", "--overwrite", "nodes", "--all", f"sluice-e2e/restart={int(t0)}")

    # A pod created right after the restart gets connectivity both ways.
    apply(cp, pod("after-restart", {"role": "after-restart"}, "node1"))
    created = time.monotonic()
    kubectl(cp, "wait", "--for=condition=Ready", "pod/after-restart", "--timeout=60s", timeout=70)
    ready = time.monotonic()
    new_ip = pods(cp, "role=after-restart")[0]["status"]["podIP"]
    peer = next(p for p in pods(cp, "app=workload") if p["spec"]["nodeName"] == "node3")
    peer_name, peer_ip = peer["metadata"]["name"], peer["status"]["podIP"]
    wait_for(
        "the new pod to reach a node3 pod",
        lambda: kubectl(
            cp, "exec", "after-restart", "--", "agnhost-lite", "connect", "--timeout", "1",
            f"{peer_ip}:80", check=False,
        ).strip()
        == peer_name,
        timeout=RESTART_CONNECT_S,
    )  # fmt: skip
    TIMINGS["after_restart_pod"] = {
        "ready_s": round(ready - created, 1),
        "connect_after_ready_s": round(time.monotonic() - ready, 1),
    }
    back = kubectl(cp, "exec", peer_name, "--", "agnhost-lite", "connect", f"{new_ip}:80")
    assert back.strip() == "after-restart"
    for node in NODE_NAMES:
        assert rest_get(node, "/readyz")[0] == 200, node


def test_delete_deployment_cni_del_clean(cp: ControlPlane) -> None:
    """Deleting the Deployment: every CNI DEL has rc=0; no pod OVS port, no lease is left."""
    items = pods(cp, "app=workload")
    names = {p["metadata"]["name"] for p in items}
    gone: dict[str, dict[str, str]] = {}  # node → {container id: ip}
    for node in NODE_NAMES:
        ids = cni_interfaces(node).values()
        gone[node] = {
            i["sluice-container-id"]: i["sluice-ips"].split("/")[0]
            for i in ids
            if i.get("sluice-pod-name") in names
        }
        assert len(gone[node]) == REPLICAS // NODES, (node, ids)
        assert set(gone[node].items()) <= {(c, ip) for ip, c in leases(node).items()}, node
    kept = {n: set(leases(n)) - set(gone[n].values()) for n in NODE_NAMES}
    start = time.monotonic()
    kubectl(cp, "delete", "deployment", "workload", "--wait=false")

    def pods_gone() -> bool:
        left = pods(cp, "app=workload")
        if "pods_terminating_s" not in TIMINGS and all(
            p["metadata"].get("deletionTimestamp") for p in left
        ):
            TIMINGS["pods_terminating_s"] = round(time.monotonic() - start, 1)
        return not left

    # why 100 s: the kubelets take 8-40 s to remove a deleted pod here (not the CNI).
    wait_for("the Deployment's pods to go", pods_gone, DEL_DEADLINE_S - 20)
    TIMINGS["pods_gone_s"] = round(time.monotonic() - start, 1)

    counts, last_change = [0], [time.monotonic()]

    def settled() -> bool:
        for node in NODE_NAMES:
            dels = {m["cid"] for m in cni_lines(node, "DEL")}
            if any(cid[:12] not in dels for cid in gone[node]):
                return False
            ifaces = {i.get("sluice-container-id") for i in cni_interfaces(node).values()}
            if ifaces & set(gone[node]) or set(gone[node].values()) & set(leases(node)):
                return False
        return time.monotonic() - last_change[0] >= DEL_QUIET_S

    def quiet() -> bool:
        n = sum(len(cni_lines(node, "DEL")) for node in NODE_NAMES)
        if n != counts[0]:
            counts[0], last_change[0] = n, time.monotonic()
        return settled()

    left = DEL_DEADLINE_S - (time.monotonic() - start)
    wait_for("CNI DELs to settle", quiet, left, interval=1.0, fail=False)
    TIMINGS["del_settled_s"] = round(time.monotonic() - start, 1)
    bad, per_pod, ports_left = [], {}, {}
    for node in NODE_NAMES:
        lines = cni_lines(node, "DEL")
        bad += [f"{node}: {m[0]}" for m in lines if m["rc"] != "0"]
        for cid in gone[node]:
            per_pod[cid[:12]] = sum(1 for m in lines if m["cid"] == cid[:12])
        ports_left[node] = [
            name
            for name, ids in cni_interfaces(node).items()
            if ids.get("sluice-container-id") in gone[node]
        ]
        assert set(leases(node)) == kept[node], node  # deleted pods' leases gone, others kept
    TIMINGS["cni_del_per_deleted_pod"] = sorted(per_pod.values())
    assert bad == []
    assert ports_left == dict.fromkeys(NODE_NAMES, [])
    assert 0 not in per_pod.values(), per_pod  # every deleted pod got its DEL


def _informer_records(node: str) -> list[tuple[datetime, str, str, str]]:
    """Controller log records of controller.informer since the apiserver was stopped."""
    recs = log_records(node, RESTART.log_offsets.get(node, 0))
    return [r for r in recs if r[2] == "controller.informer"]


def _wait_until(when: datetime) -> None:
    delay = (when - datetime.now()).total_seconds()
    if delay > 0:
        time.sleep(delay)


def test_informers_no_relist_loop_after_restart(cp: ControlPlane) -> None:
    """In the minute after the apiserver restart each informer (nodes, namespaces,
    pods, policies) of each controller relists at most 3 times: no relist loop."""
    if RESTART.stopped_at is None or RESTART.ready_at is None:
        pytest.skip("needs test_apiserver_restart")
    end = RESTART.stopped_at + timedelta(seconds=60)
    _wait_until(max(end, RESTART.ready_at + timedelta(seconds=5)))
    relists: dict[str, int] = {}
    for node in NODE_NAMES:
        for r in _informer_records(node):
            if r[0] <= end and "relisting" in r[3]:
                key = f"{node}/{r[3].split(':', 1)[0]}"  # the message starts "<informer>:"
                relists[key] = relists.get(key, 0) + 1
    TIMINGS["relists_in_minute_after_restart"] = relists
    assert all(n <= MAX_RELISTS for n in relists.values()), relists


def test_informers_quiet_after_reconnect(cp: ControlPlane) -> None:
    """Once reconnected after the restart, the informers log no warning for 90 s.

    90 s covers the apiserver's first watch bookmark (sent about a minute
    after a watch starts).  Ends as soon as a warning shows up.
    """
    if RESTART.ready_at is None:
        pytest.skip("needs test_apiserver_restart")
    grace = RESTART.ready_at + timedelta(seconds=20)  # retries during the outage end by then
    end = RESTART.ready_at + timedelta(seconds=90)

    def late_warnings() -> list[str]:
        return [
            f"{node}: {r[0]:%H:%M:%S} {r[3]}"
            for node in NODE_NAMES
            for r in _informer_records(node)
            if r[1] == "WARNING" and grace < r[0] <= end
        ]

    while datetime.now() < end and not late_warnings():
        time.sleep(1)
    print("\nlate informer warnings:", late_warnings())
    assert late_warnings() == []


def _node_ip_links(node: str) -> list[str]:
    """Links in the node's netns that carry its fabric IP (198.51.100.1N/24)."""
    out = netns.sh(["ip", "-n", f"sl-{node}", "-o", "-4", "addr", "show"])
    ip = f"198.51.100.{10 + int(node.removeprefix('node'))}/"
    return sorted(line.split()[1] for line in out.splitlines() if f" {ip}" in line)


def test_up_again_keeps_node_network(cp: ControlPlane) -> None:
    """up() with everything running restarts nothing and leaves the node network alone.

    Runs last: while the bug is there it breaks cross-node traffic.
    """
    client = [p["metadata"]["name"] for p in pods(cp, "role=after-restart")]  # on node1
    ips = [p["status"]["podIP"] for p in pods(cp, "role=svc-backend")]  # node2, node3
    if not client or len(ips) != 2:
        pytest.skip("needs the pods of test_clusterip_* and test_apiserver_restart")
    assert _node_ip_links("node1") == ["br-phy"]  # the uplink set-up moved it there
    before = cluster.StateFile(STATE_DIR).data["processes"]
    start = time.monotonic()
    cluster.up(nodes=NODES, state_dir=STATE_DIR, install_cni=install_cni())
    TIMINGS["up_again_s"] = round(time.monotonic() - start, 1)
    assert cluster.StateFile(STATE_DIR).data["processes"] == before
    links = {n: _node_ip_links(n) for n in NODE_NAMES}
    print("\nnode IP on links after up() again:", links)
    assert links == dict.fromkeys(NODE_NAMES, ["br-phy"])
    script = (
        f"for ip in {' '.join(ips)}; do ping -c1 -W1 $ip >/dev/null || "
        "ping -c1 -W1 $ip >/dev/null && echo ok $ip || echo FAIL $ip; done"
    )
    out = sh_in_pod(cp, client[0], script, timeout=30)
    assert out.split().count("ok") == len(ips), out
