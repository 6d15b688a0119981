"""Underlay mode on the fake table: pods are fabric addresses, fabric hosts reach them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flows.desired import desired_flows
from flows.fake_table import arp_request, ip_packet
from flows.ir import LOCAL
from flows.model import NodeConfig, PodPort, RemoteNode
from flows.pipeline import CLASSIFIER
from flows.remote import flows_for_remote_node
from tests.unit.flows.sample import switch as make_switch

UPLINK_MAC, GW_MAC = "02:00:c6:33:64:0b", "02:00:00:00:01:01"
NODE = NodeConfig(
    name="node1",
    node_ip="198.51.100.11",
    pod_cidrs=("198.51.100.128/28",),
    gateway_ip="198.51.100.129",
    gateway_mac=GW_MAC,
    cluster_cidr="198.51.100.128/26",
    mode="underlay",
    service_cidr="10.96.0.0/16",
    uplink_mac=UPLINK_MAC,
)
POD = PodPort(32768, "02:00:c6:33:64:82", ("198.51.100.130/28",), "default", "web", "c0ffee01")
PEER = RemoteNode("node2", "198.51.100.12", ("198.51.100.144/28",), uplink_mac="02:00:c6:33:64:0c")
LEGACY_IP, LEGACY_MAC = "198.51.100.50", "02:00:c6:33:64:32"
GW, UPLINK = NODE.gateway_ofport, NODE.uplink_ofport


@pytest.fixture(scope="module")
def switch():
    return make_switch(node=NODE, pods=(POD,), remotes=(PEER,))


def test_fabric_arp_for_a_local_pod_is_answered_with_the_uplink_mac(switch):
    reply = switch.arp_reply(arp_request(UPLINK, LEGACY_MAC, LEGACY_IP, POD.ips[0]))
    assert reply is not None
    assert reply["eth_src"] == reply["arp_sha"] == UPLINK_MAC
    assert (reply["arp_spa"], reply["arp_tpa"], reply["eth_dst"]) == (
        POD.ips[0],
        LEGACY_IP,
        LEGACY_MAC,
    )


@pytest.mark.parametrize("target", ["198.51.100.150", NODE.node_ip, "198.51.100.1"])
def test_fabric_arp_for_other_addresses_goes_to_the_host_unanswered(switch, target):
    result = switch.lookup(arp_request(UPLINK, LEGACY_MAC, LEGACY_IP, target))
    assert result.ports == (LOCAL,)
    assert switch.arp_reply(arp_request(UPLINK, LEGACY_MAC, LEGACY_IP, target)) is None


def test_a_fabric_host_reaches_a_pod_through_the_host(switch):
    packet = ip_packet(UPLINK, LEGACY_MAC, UPLINK_MAC, LEGACY_IP, POD.ips[0])
    assert switch.lookup(packet).ports == (LOCAL,)
    # the host routes it to the pod through gw0; the pod's reply goes back to gw0
    inbound = switch.lookup(ip_packet(GW, GW_MAC, POD.mac, LEGACY_IP, POD.ips[0]))
    assert inbound.ports == (POD.ofport,)
    reply = switch.lookup(ip_packet(POD.ofport, POD.mac, GW_MAC, POD.ips[0], LEGACY_IP))
    assert reply.ports == (GW,)


def test_pods_of_other_nodes_reach_local_pods_directly(switch):
    packet = ip_packet(UPLINK, PEER.uplink_mac, UPLINK_MAC, "198.51.100.146", POD.ips[0])
    result = switch.lookup(packet)
    assert result.ports == (POD.ofport,)
    assert result.emitted[0].packet["eth_dst"] == POD.mac


def test_pod_to_a_peer_pod_leaves_by_the_uplink_unencapsulated(switch):
    result = switch.lookup(ip_packet(POD.ofport, POD.mac, GW_MAC, POD.ips[0], "198.51.100.146"))
    assert result.ports == (UPLINK,)
    out = result.emitted[0].packet
    assert (out["eth_src"], out["eth_dst"]) == (UPLINK_MAC, PEER.uplink_mac)
    assert "tun_dst" not in out


@pytest.mark.parametrize("dst", ["10.96.0.1", "10.96.200.7"])
def test_service_cidr_is_steered_to_the_host(switch, dst):
    assert switch.lookup(ip_packet(POD.ofport, POD.mac, GW_MAC, POD.ips[0], dst)).ports == (GW,)


def test_the_host_keeps_its_own_traffic_on_the_fabric(switch):
    to_host = ip_packet(UPLINK, LEGACY_MAC, UPLINK_MAC, LEGACY_IP, NODE.node_ip)
    assert switch.lookup(to_host).ports == (LOCAL,)
    from_host = ip_packet(LOCAL, UPLINK_MAC, LEGACY_MAC, NODE.node_ip, LEGACY_IP)
    assert switch.lookup(from_host).ports == (UPLINK,)


def test_routing_mode_answers_no_fabric_arp_for_pods():
    routed = make_switch(node=_as_routing(NODE), pods=(POD,), remotes=(PEER,))
    request = arp_request(UPLINK, LEGACY_MAC, LEGACY_IP, POD.ips[0])
    assert routed.arp_reply(request) is None
    assert routed.lookup(request).ports == (LOCAL,)


def test_underlay_adds_three_classifier_flows_per_pod_cidr_and_one_flow_per_peer():
    def classifier_count(node: NodeConfig) -> int:
        flows = desired_flows(node, (POD,), (PEER,))["pipeline"]
        return sum(1 for f in flows if f.table is CLASSIFIER)

    assert classifier_count(NODE) - classifier_count(_as_routing(NODE)) == 3
    assert len(flows_for_remote_node(PEER, NODE)) == 1


def _as_routing(node: NodeConfig) -> NodeConfig:
    return replace(node, mode="routing")
