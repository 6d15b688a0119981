"""Every datapath mode in the sandbox, shown on the wire.

For each mode (overlay VXLAN, overlay Geneve, routing, underlay, hybrid) a fresh
3-node sandbox runs 2 pods per node, then: the full mesh of ICMP, TCP and UDP
between them while tcpdump records node1's fabric port (VXLAN must show UDP
4789 and no bare pod packets, Geneve UDP 6081, routing and underlay bare pod
IPs and no tunnel port, hybrid bare pod IPs toward node2 and VXLAN toward
node3, which sits on another subnet); host → pod on the same and on another node; a
ClusterIP Service backed by pods on the two other nodes; in underlay, a fabric
host that runs no Sluice (``sl-legacy``) reaching pods and pods reaching it;
a Node added through the API gets its flow on every node within 1 s and loses
it within 1 s of being deleted; a real fourth node joining after the pods
exist is reachable from them.

Run (root, ~2 min per mode with the Kubernetes binaries cached):
    SLUICE_E2E=1 .venv/bin/pytest -s tests/e2e/test_modes.py [-k underlay]
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from sandbox import cluster, netns
from sandbox.controlplane import (
    CP_NETNS,
    LEGACY_IP,
    LEGACY_NETNS,
    ControlPlane,
    PodNetwork,
    pod_network,
)
from sandbox.sluice_node import SluiceCni, ovs_env
from tests.e2e.kube import apply, pods
from tests.e2e.sandboxlib import (
    down_and_check,
    enter_netns,
    enter_pod,
    live_sandbox_pids,
    ping,
    pod_netns_paths,
    probe,
    rest_get,
    wait_for,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("SLUICE_E2E") != "1", reason="set SLUICE_E2E=1 (root)"),
]

STATE_DIR = Path(os.environ.get("SLUICE_E2E_MODES_STATE_DIR", "/var/lib/sluice-sandbox-e2e-modes"))
MODES = {
    "vxlan": ("overlay", "vxlan"),
    "geneve": ("overlay", "geneve"),
    "routing": ("routing", "vxlan"),
    "underlay": ("underlay", "vxlan"),
    "hybrid": ("hybrid", "vxlan"),
}
# why node3: hybrid differs from routing only toward a node on another subnet.
FAR_NODES = {"hybrid": ("node3",)}
NODES = ["node1", "node2", "node3"]
IMAGE = "localhost/sluice/workload:latest"
BACKENDS = ("node2-a", "node3-a")
FLOW_BOUND_S = 1.0  # a Node added/removed in the API → flows on every node
REACH_BOUND_S = 1.0  # a new node's ready pod → TCP reply to pods of every other node
PING_TRIES = 5  # the first packet to a new neighbour may be lost while it is resolved
LEGACY_PORT = 8080
TIMINGS: dict[str, dict[str, Any]] = {}


@dataclass
class MeshPod:
    """One workload pod: its node, IP and the command prefix that enters its netns."""

    name: str
    node: str
    ip: str
    enter: list[str]


@dataclass
class Sandbox:
    """A running sandbox in one mode, with its pods."""

    mode_id: str
    mode: str
    tunnel: str
    cp: ControlPlane
    network: PodNetwork
    hook: SluiceCni
    pods: dict[str, MeshPod]

    def pod(self, name: str) -> MeshPod:
        """The pod called *name*."""
        return self.pods[name]


def workload(name: str, node: str, labels: dict[str, str]) -> dict[str, Any]:
    """A bare workload Pod pinned to *node* (serves TCP 80 and UDP 81 with its name)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "mesh", **labels}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [
                {
                    "name": "w",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    # why: Ready then proves the kubelet's probe crossed gw0 (host → pod).
                    "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 1},
                }
            ],
        },
    }


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "mesh-backend"},
    "spec": {
        "selector": {"role": "backend"},
        "ports": [
            {"name": "tcp", "port": 8000, "targetPort": 80, "protocol": "TCP"},
            {"name": "udp", "port": 8001, "targetPort": 81, "protocol": "UDP"},
        ],
    },
}


def _objects() -> list[dict[str, Any]]:
    objs = [SERVICE]
    for node in NODES:
        for suffix in ("a", "b"):
            name = f"{node}-{suffix}"
            labels = {"role": "backend"} if name in BACKENDS else {}
            objs.append(workload(name, node, labels))
    return objs


def _mesh_pods(cp: ControlPlane) -> dict[str, MeshPod]:
    nodes = {n.name: n for n in cluster.recorded_nodes(cluster.StateFile(STATE_DIR))}
    paths = {name: pod_netns_paths(node) for name, node in nodes.items()}
    found = {}
    for item in pods(cp, "app=mesh"):
        name, node = item["metadata"]["name"], item["spec"]["nodeName"]
        path = paths[node][f"default/{name}"]
        found[name] = MeshPod(name, node, item["status"]["podIP"], enter_pod(nodes[node], path))
    return found


@pytest.fixture(scope="module", params=list(MODES))
def sb(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """A fresh sandbox per mode with 2 pods per node; down() and leak checks at exit."""
    if netns.list_netns("sl-"):
        pytest.skip("an sl-* netns exists: another sandbox is running")
    mode_id = request.param
    mode, tunnel = MODES[mode_id]
    timings = TIMINGS.setdefault(mode_id, {})
    network = pod_network(mode)
    hook = SluiceCni(STATE_DIR / "admin.kubeconfig", mode=mode, tunnel=tunnel)
    start = time.monotonic()
    try:
        far = FAR_NODES.get(mode_id, ())
        result = cluster.up(3, STATE_DIR, install_cni=hook, pod_network=network, far_nodes=far)
        cp = ControlPlane(STATE_DIR, Path(result["kubectl"]).parent, pod_network=network)
        apply(cp, *_objects())
        cp.kubectl("wait", "--for=condition=Ready", "pod", "-l", "app=mesh", "--timeout=120s")
        timings["up_and_pods_s"] = round(time.monotonic() - start, 1)
        yield Sandbox(mode_id, mode, tunnel, cp, network, hook, _mesh_pods(cp))
    finally:
        pids = live_sandbox_pids(STATE_DIR) if (STATE_DIR / "state.json").exists() else set()
        t0 = time.monotonic()
        try:
            down_and_check(STATE_DIR, pids)
        finally:
            timings["down_s"] = round(time.monotonic() - t0, 1)
            print(f"\nMODES TIMINGS {mode_id} " + json.dumps(timings))


# ---------------------------------------------------------------------------- wire capture


class Capture:
    """tcpdump on node1's fabric port (in sl-cp), written to a pcap and read back by filter."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # why --immediate-mode: otherwise libpcap's TPACKET_V3 ring hands packets
        # over per filled block or once a second, and a mesh that ends sooner is
        # stopped by SIGINT with every packet still in the ring (0 captured).
        cmd = [*enter_netns(CP_NETNS), "tcpdump", "-i", "fab-node1", "-nn", "-s", "128"]
        cmd += ["-U", "--immediate-mode"]
        self.proc = subprocess.Popen(
            [*cmd, "-w", str(path)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # "tcpdump: listening on fab-node1, ..."
        assert "listening" in line, line

    def stop(self) -> None:
        """Stop tcpdump (by its pid) and wait for it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def count(self, bpf: str) -> int:
        """Packets in the capture that match the BPF filter *bpf*."""
        out = subprocess.run(
            ["tcpdump", "-r", str(self.path), "-nn", bpf],
            capture_output=True,
            text=True,
            check=True,
        )
        return len(out.stdout.splitlines())


# ---------------------------------------------------------------------------- tests


def test_mode_is_ready_with_pods_in_its_ranges(sb: Sandbox) -> None:
    """Each controller is ready in the mode; pod IPs lie in their node's podCIDR."""
    cluster_net = ipaddress.IPv4Network(sb.network.cluster_cidr)
    for node in NODES:
        assert rest_get(node, "/readyz") == (200, {"status": "ready", "reasons": []}), node
        status, info = rest_get(node, "/v1/node")
        assert status == 200
        assert info["mode"] == sb.mode
        if sb.mode == "overlay":
            assert info["tunnel_type"] == sb.tunnel
        cidr = ipaddress.IPv4Network(info["pod_cidrs"][0])
        assert cidr.subnet_of(cluster_net)
        for p in sb.pods.values():
            if p.node == node:
                assert ipaddress.IPv4Address(p.ip) in cidr, (p.name, p.ip, cidr)
    if sb.mode == "underlay":
        fabric = ipaddress.IPv4Network(f"{LEGACY_IP}/24", strict=False)
        assert cluster_net.subnet_of(fabric)


def _mesh(sb: Sandbox) -> list[str]:
    """Ping every other pod, TCP 80 and UDP 81 to every pod on another node; the failures."""
    failures = []
    for src in sb.pods.values():
        others = [p for p in sb.pods.values() if p.name != src.name]
        for ip, tries in ping(src.enter, [p.ip for p in others], PING_TRIES).items():
            if tries > PING_TRIES:
                failures.append(f"ping {src.name} -> {ip}")
        remote = {p.name: p.ip for p in others if p.node != src.node}
        for proto, port in (("TCP", 80), ("UDP", 81)):
            replies = probe(src.enter, proto, port, remote, timeout=1.0, tries=3)
            failures += [
                f"{proto} {src.name} -> {dst}: {got!r}"
                for dst, got in replies.items()
                if got != dst
            ]
    return failures


def test_full_mesh_icmp_tcp_udp_and_what_the_fabric_carries(sb: Sandbox, tmp_path: Path) -> None:
    """Full mesh works; tcpdump on the fabric shows the mode's encapsulation (or none)."""
    capture = Capture(tmp_path / "fabric.pcap")
    try:
        start = time.monotonic()
        failures = _mesh(sb)
        TIMINGS[sb.mode_id]["mesh_s"] = round(time.monotonic() - start, 1)
    finally:
        capture.stop()
    assert failures == []
    cidr = sb.network.cluster_cidr
    seen = {
        "vxlan": capture.count("udp dst port 4789"),
        "geneve": capture.count("udp dst port 6081"),
        "bare": capture.count(f"ip and src net {cidr} and dst net {cidr}"),
    }
    TIMINGS[sb.mode_id]["fabric_packets"] = seen
    if sb.mode == "overlay":
        other = "geneve" if sb.tunnel == "vxlan" else "vxlan"
        assert seen[sb.tunnel] > 0 and seen[other] == 0 and seen["bare"] == 0, seen
    elif sb.mode == "hybrid":
        far, near = _node_ip("node3"), _node_ip("node2")
        seen["vxlan_to_far"] = capture.count(f"udp dst port 4789 and host {far}")
        seen["vxlan_to_near"] = capture.count(f"udp dst port 4789 and host {near}")
        far_pods = " or ".join(f"net {p.ip}" for p in sb.pods.values() if p.node == "node3")
        seen["bare_far"] = capture.count(f"ip and ({far_pods})")
        assert seen["vxlan_to_far"] > 0 and seen["bare"] > 0, seen
        assert seen["vxlan_to_near"] == 0 and seen["bare_far"] == 0, seen
    else:
        assert seen["bare"] > 0 and seen["vxlan"] == 0 and seen["geneve"] == 0, seen


def _node_ip(name: str) -> str:
    """A sandbox node's InternalIP."""
    nodes = cluster.recorded_nodes(cluster.StateFile(STATE_DIR))
    return next(n.ip for n in nodes if n.name == name)


def test_host_reaches_pods_on_its_own_and_on_other_nodes(sb: Sandbox) -> None:
    """node1's host netns pings and opens TCP to a local pod and to pods on node2, node3."""
    targets = {name: sb.pod(name).ip for name in ("node1-a", "node2-a", "node3-b")}
    host = enter_netns("sl-node1")
    assert max(ping(host, list(targets.values()), PING_TRIES).values()) <= PING_TRIES
    assert probe(host, "TCP", 80, targets, timeout=1.0, tries=3) == {n: n for n in targets}


def test_clusterip_backed_by_pods_on_two_other_nodes(sb: Sandbox) -> None:
    """A node1 pod reaches both backends (node2, node3) of a ClusterIP over TCP and UDP."""
    vip = sb.cp.kubectl("get", "svc", "mesh-backend", "-o", "jsonpath={.spec.clusterIP}").strip()
    client_pod = sb.pod("node1-b")
    seen: dict[str, set[str]] = {"TCP": set(), "UDP": set()}

    def both(proto: str, port: int) -> bool:
        tries = {f"c{i}": vip for i in range(12)}
        replies = probe(client_pod.enter, proto, port, tries, timeout=1.0, tries=2)
        seen[proto].update(r for r in replies.values() if not r.startswith("!"))
        return set(BACKENDS) <= seen[proto]

    # why poll: kube-proxy programs the endpoints asynchronously after the pods are ready.
    wait_for("both backends over TCP", lambda: both("TCP", 8000), timeout=30)
    wait_for("both backends over UDP", lambda: both("UDP", 8001), timeout=30)
    assert seen == {"TCP": set(BACKENDS), "UDP": set(BACKENDS)}


LEGACY_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(8)
print("ready", flush=True)
while True:
    c, peer = s.accept(); c.sendall(("legacy saw " + peer[0]).encode()); c.close()
"""


def test_underlay_fabric_host_without_sluice_reaches_pods_and_back(sb: Sandbox) -> None:
    """sl-legacy (198.51.100.50/24, no routes) pings and connects to pods; pods reach it
    and it sees their own addresses (no NAT)."""
    if sb.mode != "underlay":
        pytest.skip("only underlay puts pods on the fabric's subnet")
    legacy = enter_netns(LEGACY_NETNS)
    targets = {name: sb.pod(name).ip for name in ("node1-a", "node2-b", "node3-a")}
    assert max(ping(legacy, list(targets.values()), PING_TRIES).values()) <= PING_TRIES
    assert probe(legacy, "TCP", 80, targets, timeout=1.0, tries=3) == {n: n for n in targets}
    server = subprocess.Popen(
        [*legacy, sys.executable, "-c", LEGACY_SERVER, str(LEGACY_PORT)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        for name in targets:
            pod = sb.pod(name)
            assert ping(pod.enter, [LEGACY_IP], PING_TRIES)[LEGACY_IP] <= PING_TRIES
            reply = probe(pod.enter, "TCP", LEGACY_PORT, {"l": LEGACY_IP}, timeout=1.0, tries=3)
            assert reply == {"l": f"legacy saw {pod.ip}"}
    finally:
        server.kill()
        server.wait()


def _remote_flow_nodes(cidr: str) -> set[str]:
    """The nodes whose br-int has an L3Forwarding flow for *cidr*."""
    found = set()
    for node in cluster.recorded_nodes(cluster.StateFile(STATE_DIR)):
        if node.name not in NODES:
            continue
        out = subprocess.run(
            ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int", "table=L3Forwarding"],
            capture_output=True,
            text=True,
            env={**os.environ, **ovs_env(node)},
            check=True,
        ).stdout
        if f"nw_dst={cidr} " in out:
            found.add(node.name)
    return found


def _ghost_cidr(sb: Sandbox) -> str:
    """A podCIDR the controller-manager has not handed out (the next free one)."""
    net = ipaddress.IPv4Network(sb.network.cluster_cidr)
    taken = {rest_get(n, "/v1/node")[1]["pod_cidrs"][0] for n in NODES}
    size = int(sb.network.node_cidr_mask)
    return str(next(str(c) for c in net.subnets(new_prefix=size) if str(c) not in taken))


def _until(cond: Any, bound: float) -> float:
    """Poll *cond* every 20 ms until true; seconds it took (fails after 5 × *bound*)."""
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < 5 * bound, "never converged"
        time.sleep(0.02)
    return time.monotonic() - start


def test_node_added_and_removed_at_run_time_within_1s(sb: Sandbox) -> None:
    """A Node created in the API (podCIDR, InternalIP, uplink MAC) gets one flow on every
    node within 1 s; deleting it removes those flows within 1 s."""
    api = client.CoreV1Api(config.new_client_from_config(str(sb.cp.admin_kubeconfig)))
    cidr = _ghost_cidr(sb)
    body: Any = {
        "metadata": {"name": "ghost", "annotations": {"sluice.io/uplink-mac": "02:00:c6:33:64:4d"}},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
    }
    api.create_node(body)
    try:
        start = time.monotonic()
        status = {"status": {"addresses": [{"type": "InternalIP", "address": "198.51.100.77"}]}}
        api.patch_node_status("ghost", status)
        added = (time.monotonic() - start) + _until(
            lambda: _remote_flow_nodes(cidr) == set(NODES), FLOW_BOUND_S
        )
    finally:
        start = time.monotonic()
        api.delete_node("ghost")
        removed = (time.monotonic() - start) + _until(
            lambda: not _remote_flow_nodes(cidr), FLOW_BOUND_S
        )
    TIMINGS[sb.mode_id]["node_flows_s"] = {"added": round(added, 2), "removed": round(removed, 2)}
    assert added < FLOW_BOUND_S and removed < FLOW_BOUND_S, (added, removed)


def test_a_fourth_node_joining_after_the_pods_is_reachable(sb: Sandbox) -> None:
    """node4 joins the running cluster; once its pod is ready, pods of the first three
    nodes get its TCP reply within 1 s (timed from the probe's start)."""
    start = time.monotonic()
    far = FAR_NODES.get(sb.mode_id, ())
    cluster.up(4, STATE_DIR, install_cni=sb.hook, pod_network=sb.network, far_nodes=far)
    apply(sb.cp, workload("node4-a", "node4", {}))
    sb.cp.kubectl("wait", "--for=condition=Ready", "pod/node4-a", "--timeout=120s")
    TIMINGS[sb.mode_id]["node4_pod_ready_s"] = round(time.monotonic() - start, 1)
    ip = sb.cp.kubectl("get", "pod", "node4-a", "-o", "jsonpath={.status.podIP}").strip()
    sources = [sb.pod(name) for name in ("node1-a", "node2-b", "node3-a")]

    def reach(src: MeshPod) -> tuple[dict[str, str], float]:
        # why 0.1 s tries: the first packet toward a new tunnel endpoint can be lost
        # while OVS resolves its neighbour; a retry shows when the path really works.
        t0 = time.monotonic()
        reply = probe(src.enter, "TCP", 80, {"n4": ip}, timeout=0.1, tries=40)
        return reply, time.monotonic() - t0

    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        results = list(pool.map(reach, sources))
    TIMINGS[sb.mode_id]["node4_reached_s"] = [round(t, 2) for _, t in results]
    assert [reply for reply, _ in results] == [{"n4": "node4-a"}] * len(sources)
    assert max(t for _, t in results) < REACH_BOUND_S, results
    for src in sources:
        assert ping(src.enter, [ip], PING_TRIES)[ip] <= PING_TRIES, src.name
