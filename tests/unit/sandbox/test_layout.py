"""The sandbox's address layout per mode: pod ranges, far nodes, and the recorded network."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from sandbox import cluster
from sandbox.controlplane import FAR_GATEWAY, LEGACY_IP, PodNetwork, pod_network
from sandbox.node import Node

FABRIC = ipaddress.IPv4Network("198.51.100.0/24")


def test_underlay_pod_ranges_are_part_of_the_fabric_and_miss_its_hosts():
    net = ipaddress.IPv4Network(pod_network("underlay").cluster_cidr)
    assert net.subnet_of(FABRIC)
    hosts = [ipaddress.IPv4Address(a) for a in ("198.51.100.1", "198.51.100.254", LEGACY_IP)]
    hosts += [ipaddress.IPv4Address(Node(f"n{i}", i, Path("/s"), Path("/b")).ip) for i in (1, 9)]
    assert not any(h in net for h in hosts)


@pytest.mark.parametrize("mode", ["overlay", "routing", "hybrid"])
def test_other_modes_keep_pods_off_the_fabric(mode):
    assert not ipaddress.IPv4Network(pod_network(mode).cluster_cidr).overlaps(FABRIC)


def test_a_far_node_sits_on_the_routed_second_subnet():
    near = Node("node2", 2, Path("/s"), Path("/b"))
    far = Node("node3", 3, Path("/s"), Path("/b"), far=True)
    assert ipaddress.IPv4Address(near.ip) in FABRIC
    second = ipaddress.IPv4Network(f"{FAR_GATEWAY}/24", strict=False)
    assert ipaddress.IPv4Address(far.ip) in second and far.ip != FAR_GATEWAY


def test_the_pod_network_cannot_change_under_running_nodes(tmp_path):
    st = cluster.StateFile(tmp_path)
    cluster._record_pod_network(st, pod_network("underlay"))
    st.data["nodes"]["node1"] = 1
    with pytest.raises(SystemExit, match="sandbox down"):
        cluster._record_pod_network(st, PodNetwork())
    cluster._record_pod_network(st, pod_network("underlay"))  # the same one is fine
    nodes = cluster.recorded_nodes(cluster.StateFile(tmp_path))
    assert [n.cluster_cidr for n in nodes] == [pod_network("underlay").cluster_cidr]
