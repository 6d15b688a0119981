"""Acceptance test of the sandbox infrastructure with the reference bridge CNI.

Brings up a real 3-node Kubernetes v1.20.2 cluster (``sandbox.cluster.up``)
with Debian's bridge + host-local plugins as the pod network, checks
scheduling, exec/logs, same-node pod and ClusterIP traffic, then runs
``down`` and checks nothing is left.  Cross-node traffic needs the real CNI
and is not tested here.

Run (root, ~1 min with the Kubernetes binaries cached, ~5 min cold):
    SLUICE_E2E=1 .venv/bin/pytest -s -m e2e tests/e2e/test_sandbox_reference_cni.py
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import cluster, k8sbuild, netns
from sandbox.controlplane import CP_NETNS, HOST_LINK, ControlPlane
from sandbox.node import BIND_MOUNTS
from tests.e2e.kube import apply, pod_cidrs, pods

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("SLUICE_E2E") != "1", reason="set SLUICE_E2E=1 (root)"),
]

STATE_DIR = Path(os.environ.get("SLUICE_E2E_STATE_DIR", "/var/lib/sluice-sandbox-e2e"))
NODES = 3
REPLICAS = 6
TIMINGS: dict[str, Any] = {}
# The build (sandbox.k8sbuild) runs inside up() only when binaries are missing.
BUILD_NOTE = "cached" if not k8sbuild.missing_binaries() else "built during up"

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
                "terminationGracePeriodSeconds": 2,
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": {"app": "workload"}},
                    }
                ],
                "containers": [
                    {
                        "name": "workload",
                        "image": "localhost/sluice/workload:latest",
                        "imagePullPolicy": "Never",
                    }
                ],
            },
        },
    },
}


def backend_objects(node: str) -> list[dict[str, Any]]:
    """A workload pod pinned to *node* and a ClusterIP Service (TCP 8000, UDP 8001) on it."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "svc-backend", "labels": {"role": "svc-backend"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "w",
                    "image": "localhost/sluice/workload:latest",
                    "imagePullPolicy": "Never",
                }
            ],
        },
    }
    svc = {
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
    return [pod, svc]


@pytest.fixture(scope="module")
def cp() -> Iterator[ControlPlane]:
    """The running sandbox (brought up once per module); down() again on exit (no-op)."""
    if netns.netns_path(CP_NETNS).exists():
        pytest.skip(f"netns {CP_NETNS} exists: another sandbox is running")
    start = time.monotonic()
    try:
        result = cluster.up(nodes=NODES, state_dir=STATE_DIR)
        TIMINGS["up_s"] = round(time.monotonic() - start, 1)
        TIMINGS["up"] = result["timings_s"]
        TIMINGS["k8s_build_s"] = BUILD_NOTE
        TIMINGS["memory_idle_mib"] = result["memory_mib"]
        yield ControlPlane(STATE_DIR, Path(result["kubectl"]).parent)
    finally:
        cluster.down(STATE_DIR)
        print("\nE2E TIMINGS " + json.dumps(TIMINGS))


def test_nodes_ready(cp: ControlPlane) -> None:
    """All nodes registered, Ready, each with its own podCIDR inside the cluster CIDR."""
    assert cluster.node_ready(cp) == {f"node{i}": True for i in range(1, NODES + 1)}
    cidrs = pod_cidrs(cp)
    assert len(set(cidrs.values())) == NODES
    for cidr in cidrs.values():
        assert ipaddress.IPv4Network(cidr).subnet_of(ipaddress.IPv4Network("10.244.0.0/16"))


def test_up_again_is_a_noop(cp: ControlPlane) -> None:
    """A second up() with everything running restarts nothing and only reports status."""
    before = cluster.StateFile(STATE_DIR).data["processes"]
    start = time.monotonic()
    result = cluster.up(nodes=NODES, state_dir=STATE_DIR)
    TIMINGS["up_again_s"] = round(time.monotonic() - start, 1)
    assert cluster.StateFile(STATE_DIR).data["processes"] == before
    assert result["running"] and all(result["nodes_ready"].values())


def test_deployment_spreads_over_nodes(cp: ControlPlane) -> None:
    """6 replicas Running, 2 per node, each IP inside its node's podCIDR."""
    start = time.monotonic()
    apply(cp, DEPLOYMENT)
    cp.kubectl("rollout", "status", "deployment/workload", "--timeout=120s")
    TIMINGS["deployment_running_s"] = round(time.monotonic() - start, 1)
    items = pods(cp, "app=workload")
    assert len(items) == REPLICAS
    cidrs = pod_cidrs(cp)
    per_node: dict[str, int] = {}
    for pod in items:
        assert pod["status"]["phase"] == "Running"
        node, ip = pod["spec"]["nodeName"], pod["status"]["podIP"]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(cidrs[node]), (node, ip)
        per_node[node] = per_node.get(node, 0) + 1
    assert per_node == {f"node{i}": REPLICAS // NODES for i in range(1, NODES + 1)}


def test_exec_and_logs(cp: ControlPlane) -> None:
    """kubectl exec and kubectl logs reach every node's kubelet."""
    for pod in pods(cp, "app=workload"):
        name = pod["metadata"]["name"]
        assert cp.kubectl("exec", name, "--", "hostname").strip() == name
        assert f"{name}: serving hostname" in cp.kubectl("logs", name)


def test_same_node_pod_to_pod_tcp_udp(cp: ControlPlane) -> None:
    """Pods on one node reach each other over TCP 80 and UDP 81 (agnhost-style reply)."""
    for node in (f"node{i}" for i in range(1, NODES + 1)):
        a, b = [p for p in pods(cp, "app=workload") if p["spec"]["nodeName"] == node][:2]
        target, ip = b["metadata"]["name"], b["status"]["podIP"]
        src = a["metadata"]["name"]
        assert (
            cp.kubectl("exec", src, "--", "agnhost-lite", "connect", f"{ip}:80").strip() == target
        )
        udp = cp.kubectl("exec", src, "--", "agnhost-lite", "connect", "--udp", f"{ip}:81")
        assert udp.strip() == target


def test_clusterip_from_same_node(cp: ControlPlane) -> None:
    """A ClusterIP Service (kube-proxy iptables) answers a client pod on the backend's node."""
    apply(cp, *backend_objects("node1"))
    cp.kubectl("wait", "--for=condition=Ready", "pod/svc-backend", "--timeout=60s")
    vip = cp.kubectl("get", "svc", "svc-backend", "-o", "jsonpath={.spec.clusterIP}").strip()
    client = [p for p in pods(cp, "app=workload") if p["spec"]["nodeName"] == "node1"][0]
    exec_ = ["exec", client["metadata"]["name"], "--", "agnhost-lite", "connect"]
    deadline = time.monotonic() + 30
    while True:  # kube-proxy programs the rules asynchronously
        out = cp.kubectl(*exec_, f"{vip}:8000", check=False).strip()
        if out == "svc-backend" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert out == "svc-backend"
    assert cp.kubectl(*exec_, "--udp", f"{vip}:8001").strip() == "svc-backend"


def _our_pids() -> set[int]:
    """Every live process of the sandbox: recorded daemons, node mount-ns members, pods."""
    st = cluster.StateFile(STATE_DIR)
    pids = {p["pid"] for p in st.data["processes"].values()}
    for node in cluster.recorded_nodes(st):
        pids.update(node.daemon_pids())
        for cg in node.cgroup_dirs():
            pids.update(netns.pids_in_cgroup_tree(cg))
    return {p for p in pids if netns.proc_state(p) not in (None, "Z", "X")}


def test_down_removes_everything(cp: ControlPlane) -> None:
    """After down(): no process, netns, mount, cgroup, link, host dir or state dir left."""
    TIMINGS["memory_with_pods_mib"] = cluster.memory_report(cluster.StateFile(STATE_DIR))
    st = cluster.StateFile(STATE_DIR)
    pids = _our_pids()
    assert len(pids) > 20  # daemons + shims + pod processes
    start = time.monotonic()
    assert cluster.down(STATE_DIR) == []
    TIMINGS["down_s"] = round(time.monotonic() - start, 1)
    assert [p for p in pids if netns.proc_state(p) not in (None, "Z", "X")] == []
    assert netns.list_netns("sl-") == []
    assert netns.mounts_under(STATE_DIR) == []
    assert not any(Path(c).exists() for c in st.data["cgroups"])
    assert not list(Path("/sys/fs/cgroup").glob("*/kp-*"))
    assert not netns.link_exists(HOST_LINK)
    assert not STATE_DIR.exists()
    for target in BIND_MOUNTS:
        if target in st.data["dirs"]:
            assert not Path(target).exists()
    for key, value in st.data["sysctls"].items():
        assert Path("/proc/sys", key).read_text().strip() == value
