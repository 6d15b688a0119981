"""The resources benchmark: its synthetic cluster (pure) and a tiny run (integration).

The pure tests parse the generated objects with the controller's own parsers,
so the benchmark keeps feeding the controller what it really watches. The
smoke run needs root, OVS, etcd and the kube-apiserver built by
``python -m sandbox.k8sbuild``; it checks the record's shape, never timings.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest

from bench import apiserver, kubeload, procstat, resources
from bench.kubeload import Shape
from flows.model import RemoteNode
from flows.policy_model import PodMeta, Policy
from sandbox.ovs import binaries_missing
from tests.unit.bench.test_smoke import check_record, numbers

SHAPE = Shape(nodes=40, pods=400, namespaces=5, policies=10)


def test_pod_ips_are_unique_and_inside_their_nodes_cidr() -> None:
    ips = [kubeload.pod_ip(j, SHAPE) for j in range(SHAPE.pods)]
    assert len(set(ips)) == SHAPE.pods
    for j, ip in enumerate(ips):
        node = kubeload.pod_body(j, SHAPE)["spec"]["nodeName"]
        index = int(node.split("-")[1])
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(kubeload.node_pod_cidr(index))
    per_node = [kubeload.pods_on_node(i, SHAPE) for i in range(SHAPE.nodes)]
    assert sorted(j for pods in per_node for j in pods) == list(range(SHAPE.pods))


def test_pods_parse_as_the_policy_informer_sees_them() -> None:
    for j in (0, 7, SHAPE.pods - 1):
        body: dict[str, Any] = {**kubeload.pod_body(j, SHAPE), **kubeload.pod_status(j, SHAPE)}
        meta = PodMeta.from_k8s(body)
        assert meta.ips == (kubeload.pod_ip(j, SHAPE),)
        assert (meta.namespace, meta.name) == kubeload.pod_ref(j, SHAPE)
        assert meta.ports["http"] == ("TCP", 8080)


def test_every_policy_variant_parses_and_one_nodes_pods_are_spread() -> None:
    policies = [Policy.from_k8s(kubeload.policy_body(k, SHAPE)) for k in range(SHAPE.policies)]
    assert len({(p.namespace, p.name) for p in policies}) == SHAPE.policies
    local = [kubeload.pod_body(j, SHAPE) for j in kubeload.pods_on_node(0, SHAPE)]
    assert len({p["metadata"]["namespace"] for p in local}) > 1
    selected = [
        p
        for p in local
        for pol in policies
        if pol.namespace == p["metadata"]["namespace"]
        and pol.pod_selector.matches(p["metadata"]["labels"])
    ]
    assert selected  # the node's own pods are isolated by some policy


def test_nodes_carry_what_the_node_handler_reads() -> None:
    body = kubeload.node_body(300)
    addresses = {a["type"]: a["address"] for a in body["status"]["addresses"]}
    remote = RemoteNode(
        name=body["metadata"]["name"],
        node_ip=addresses["InternalIP"],
        pod_cidrs=tuple(body["spec"]["podCIDRs"]),
        uplink_mac=body["metadata"]["annotations"][kubeload.UPLINK_MAC_ANNOTATION],
    )
    assert remote.pod_cidrs == (kubeload.node_pod_cidr(300),)
    assert len({kubeload.node_ip(i) for i in range(1024)}) == 1024


def test_shape_rejects_clusters_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="nodes"):
        Shape(nodes=1025, pods=0, namespaces=1, policies=0)
    with pytest.raises(ValueError, match="pods"):
        Shape(nodes=2, pods=501, namespaces=1, policies=0)


def test_procstat_reads_this_process() -> None:
    mem = procstat.memory_mib(os.getpid())
    assert set(mem) == set(procstat.MEM_KEYS)
    assert 0 < mem["RssAnon"] <= mem["VmRSS"] <= mem["VmHWM"]
    before = procstat.cpu_seconds(os.getpid())
    sum(i * i for i in range(300_000))
    assert procstat.cpu_seconds(os.getpid()) >= before


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    missing = binaries_missing() + apiserver.binaries_missing()
    return f"missing: {', '.join(missing)}" if missing else None


def _ours() -> set[str]:
    netns = Path("/run/netns")
    return {p.name for p in netns.glob("slr-*")} if netns.exists() else set()


@pytest.mark.integration
def test_resources_quick(tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    before, shm_before = _ours(), set(Path("/dev/shm").glob("slr-*"))
    res = resources.run(tmp_path, quick=True)
    assert _ours() == before and set(Path("/dev/shm").glob("slr-*")) == shm_before
    check_record(res, "resources")
    controller = res["tables"][0]["rows"]
    assert [r["phase"] for r in controller] == ["sync", "idle", "churn", "after churn, until quiet"]
    assert all(r["rss_end_mib"] <= r["hwm_mib"] for r in controller)
    numbers(controller, "cpu_pct")
    assert res["breakdown"]["remote_node_flows"] == resources.sizes(True).shape.nodes - 1
    assert res["breakdown"]["churn"]["failures"] == 0
