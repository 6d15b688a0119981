"""Hybrid mode: route to nodes on the uplink's subnet, tunnel to every other node."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cni.node import TUNNEL_OVERHEAD, pod_mtu
from flows.fake_table import ip_packet
from flows.model import RemoteNode
from flows.remote import flows_for_remote_node
from tests.unit.flows.sample import GW_MAC, POD_A, ROUTED_NODE
from tests.unit.flows.sample import switch as make_switch

NODE = replace(ROUTED_NODE, mode="hybrid", uplink_subnet="192.168.10.0/24")
NEAR = RemoteNode("near", "192.168.10.12", ("10.244.2.0/24",), uplink_mac="02:00:c0:a8:0a:0c")
FAR = RemoteNode("far", "203.0.113.13", ("10.244.3.0/24",), uplink_mac="02:00:cb:00:71:0d")
SHY = RemoteNode("shy", "192.168.10.14", ("10.244.4.0/24",))  # no uplink MAC published yet
TUN, UPLINK = NODE.tunnel_ofport, NODE.uplink_ofport


@pytest.fixture(scope="module")
def switch():
    return make_switch(node=NODE, remotes=(NEAR, FAR, SHY))


def _from_a(dst: str) -> dict:
    return ip_packet(POD_A.ofport, POD_A.mac, GW_MAC, POD_A.ips[0], dst)


def test_a_node_on_the_uplink_subnet_is_routed_unencapsulated(switch):
    result = switch.lookup(_from_a("10.244.2.9"))
    assert result.ports == (UPLINK,)
    out = result.emitted[0].packet
    assert out["eth_dst"] == NEAR.uplink_mac and "tun_dst" not in out


@pytest.mark.parametrize(("dst", "remote"), [("10.244.3.9", FAR), ("10.244.4.9", SHY)])
def test_other_subnets_and_unannounced_peers_go_through_the_tunnel(switch, dst, remote):
    result = switch.lookup(_from_a(dst))
    assert result.ports == (TUN,)
    assert result.emitted[0].packet["tun_dst"] == remote.node_ip


@pytest.mark.parametrize("in_port", [TUN, UPLINK])
def test_pods_are_reached_from_the_tunnel_and_from_the_uplink(switch, in_port):
    packet = ip_packet(
        in_port, "02:00:00:00:02:01", ROUTED_NODE.uplink_mac, "10.244.3.9", POD_A.ips[0]
    )
    assert switch.lookup(packet).ports == (POD_A.ofport,)


def test_still_one_flow_per_remote_node():
    assert all(len(flows_for_remote_node(r, NODE)) == 1 for r in (NEAR, FAR, SHY))


def test_hybrid_needs_the_uplink_subnet():
    with pytest.raises(ValueError, match="uplink_subnet"):
        replace(NODE, uplink_subnet=None)


def test_hybrid_pods_leave_room_for_the_tunnel_header():
    assert pod_mtu(1500, "hybrid", "geneve") == 1500 - TUNNEL_OVERHEAD["geneve"]
    assert pod_mtu(1500, "routing", "geneve") == 1500
