"""Packet-level behaviour of the compiled pipeline, checked on the fake table."""

from __future__ import annotations

import pytest

from flows.fake_table import arp_request, ip_packet
from flows.fields import CT_ZONE, CtState
from flows.recipes import GLOBAL_VIRTUAL_MAC
from tests.unit.flows.sample import GW_MAC, NODE, POD_A, POD_B, REMOTE, REMOTE_POD_IP, ROUTED_NODE
from tests.unit.flows.sample import switch as make_switch

A_IP, B_IP = POD_A.ips[0], POD_B.ips[0]
GW, TUN, UPLINK = NODE.gateway_ofport, NODE.tunnel_ofport, ROUTED_NODE.uplink_ofport


@pytest.fixture(scope="module")
def switch():
    return make_switch()


@pytest.fixture(scope="module")
def routed():
    return make_switch(node=ROUTED_NODE)


def from_a(dst_ip: str, eth_dst: str = GW_MAC, ttl: int = 64) -> dict:
    return ip_packet(POD_A.ofport, POD_A.mac, eth_dst, A_IP, dst_ip, ttl)


def test_pod_to_pod_same_node_is_routed_with_rewritten_macs_and_ttl(switch):
    result = switch.lookup(from_a(B_IP, eth_dst=POD_B.mac))
    assert result.ports == (POD_B.ofport,)
    out = result.emitted[0].packet
    assert (out["eth_src"], out["eth_dst"], out["nw_ttl"]) == (GW_MAC, POD_B.mac, 63)
    assert result.commits == ((CT_ZONE, 0),)


@pytest.mark.parametrize("dst", ["8.8.8.8", NODE.node_ip, NODE.gateway_ip, "10.96.0.10"])
def test_pod_to_outside_the_pod_network_goes_to_gw0_unchanged_ttl(switch, dst):
    result = switch.lookup(from_a(dst))
    assert result.ports == (GW,)
    out = result.emitted[0].packet
    assert (out["eth_dst"], out["nw_ttl"], out["ip_dst"]) == (GW_MAC, 64, dst)


@pytest.mark.parametrize("src", [NODE.gateway_ip, NODE.node_ip])
def test_host_to_pod_via_gw0_is_delivered_and_marked_as_from_gateway(switch, src):
    result = switch.lookup(ip_packet(GW, GW_MAC, POD_A.mac, src, A_IP))
    assert result.ports == (POD_A.ofport,)
    assert result.emitted[0].packet["eth_dst"] == POD_A.mac
    assert result.commits == ((CT_ZONE, 1),)


def test_reply_of_connection_from_gw0_returns_to_gw0_not_to_the_pod(switch):
    # the host DNATed a Service to pod B for pod A; B's reply must go back to the host
    reply = ip_packet(POD_B.ofport, POD_B.mac, GW_MAC, B_IP, A_IP)
    reply |= {"ct_state": CtState.EST | CtState.RPL | CtState.TRK, "ct_mark": 1}
    assert switch.lookup(reply).ports == (GW,)
    reply["ct_mark"] = 0
    assert switch.lookup(reply).ports == (POD_A.ofport,)


def test_invalid_conntrack_state_is_dropped(switch):
    packet = from_a(B_IP) | {"ct_state": CtState.INV | CtState.TRK}
    assert switch.lookup(packet).dropped


def test_pod_to_remote_pod_overlay_leaves_by_tunnel_with_tun_dst(switch):
    result = switch.lookup(from_a(REMOTE_POD_IP))
    assert result.ports == (TUN,)
    out = result.emitted[0].packet
    assert (out["tun_dst"], out["nw_ttl"]) == (REMOTE.node_ip, 63)
    assert "tun_id" not in out  # no VNI configured: the port's own key


def test_pod_to_remote_pod_routing_leaves_by_uplink_to_remote_mac(routed):
    result = routed.lookup(from_a(REMOTE_POD_IP))
    assert result.ports == (UPLINK,)
    out = result.emitted[0].packet
    assert (out["eth_src"], out["eth_dst"]) == (ROUTED_NODE.uplink_mac, REMOTE.uplink_mac)
    assert "tun_dst" not in out and out["nw_ttl"] == 63


def test_host_to_remote_pod_goes_through_the_tunnel(switch):
    assert switch.lookup(
        ip_packet(GW, GW_MAC, GLOBAL_VIRTUAL_MAC, NODE.node_ip, REMOTE_POD_IP)
    ).ports == (TUN,)


@pytest.mark.parametrize(("node", "in_port"), [(NODE, TUN), (ROUTED_NODE, UPLINK)])
def test_traffic_from_other_nodes_is_delivered_to_the_local_pod(node, in_port):
    packet = ip_packet(in_port, "02:00:00:00:02:01", "aa:bb:cc:dd:ee:ff", REMOTE_POD_IP, A_IP)
    result = make_switch(node=node).lookup(packet)
    assert result.ports == (POD_A.ofport,)
    assert result.emitted[0].packet["eth_src"] == GW_MAC


def test_tunnel_port_is_ignored_in_routing_mode_and_uplink_in_overlay(switch, routed):
    packet = ip_packet(TUN, "02:00:00:00:02:01", GW_MAC, REMOTE_POD_IP, A_IP)
    assert routed.lookup(packet).dropped
    assert switch.lookup(packet | {"in_port": UPLINK}).dropped


def test_remote_traffic_for_no_local_pod_is_not_sent_to_the_host(switch):
    assert switch.lookup(ip_packet(TUN, GW_MAC, GW_MAC, REMOTE_POD_IP, "8.8.8.8")).dropped


@pytest.mark.parametrize(
    "packet",
    [
        ip_packet(POD_A.ofport, POD_A.mac, GW_MAC, "10.244.1.99", B_IP),  # spoofed IP
        ip_packet(POD_A.ofport, "02:00:00:00:99:99", GW_MAC, A_IP, B_IP),  # spoofed MAC
        ip_packet(POD_A.ofport, POD_A.mac, GW_MAC, B_IP, "8.8.8.8"),  # another pod's IP
        arp_request(POD_A.ofport, POD_A.mac, B_IP, NODE.gateway_ip),  # spoofed spa
        arp_request(POD_A.ofport, POD_B.mac, A_IP, NODE.gateway_ip, POD_A.mac),  # spoofed sha
        arp_request(POD_A.ofport, POD_B.mac, A_IP, NODE.gateway_ip),  # spoofed sha + MAC
        {"in_port": POD_A.ofport, "eth_src": POD_A.mac, "eth_type": 0x86DD},  # IPv6
        from_a(B_IP) | {"in_port": 40000},  # unknown port
    ],
)
def test_spoofed_or_unknown_traffic_is_dropped(switch, packet):
    result = switch.lookup(packet)
    assert result.dropped and result.commits == ()


def test_arp_for_gateway_is_answered_with_gw0_mac(switch):
    reply = switch.arp_reply(arp_request(POD_A.ofport, POD_A.mac, A_IP, NODE.gateway_ip))
    assert reply is not None
    assert reply["eth_src"] == reply["arp_sha"] == GW_MAC
    assert reply["eth_dst"] == reply["arp_tha"] == POD_A.mac
    assert (reply["arp_spa"], reply["arp_tpa"], reply["arp_op"]) == (NODE.gateway_ip, A_IP, 2)


def test_arp_for_a_local_pod_is_answered_with_that_pods_mac(switch):
    for in_port, sha, spa in [(POD_A.ofport, POD_A.mac, A_IP), (GW, GW_MAC, NODE.gateway_ip)]:
        reply = switch.arp_reply(arp_request(in_port, sha, spa, B_IP))
        assert reply is not None
        assert (reply["arp_sha"], reply["arp_spa"], reply["arp_tha"]) == (POD_B.mac, B_IP, sha)


def test_host_arp_for_remote_pod_is_answered_with_virtual_mac_swapping_addresses(switch):
    reply = switch.arp_reply(arp_request(GW, GW_MAC, NODE.gateway_ip, REMOTE_POD_IP))
    assert reply is not None
    assert (reply["arp_sha"], reply["arp_spa"]) == (GLOBAL_VIRTUAL_MAC, REMOTE_POD_IP)
    assert (reply["arp_tha"], reply["arp_tpa"]) == (GW_MAC, NODE.gateway_ip)


@pytest.mark.parametrize("tpa", [REMOTE_POD_IP, "10.244.1.99", "8.8.8.8"])
def test_pod_arp_for_unknown_addresses_gets_no_answer(switch, tpa):
    assert switch.lookup(arp_request(POD_A.ofport, POD_A.mac, A_IP, tpa)).dropped


def test_arp_replies_from_pods_are_not_answered_or_flooded(switch):
    packet = arp_request(POD_A.ofport, POD_A.mac, A_IP, B_IP) | {"arp_op": 2}
    assert switch.lookup(packet).dropped


def test_ttl_expiry_stops_the_packet(switch):
    result = switch.lookup(from_a(B_IP, ttl=1))
    assert result.ttl_expired and result.dropped


def test_pod_with_two_ips_is_guarded_and_routed_for_both():
    pod = POD_A.__class__(
        32770, "02:00:0a:f4:01:09", ("10.244.1.9", "10.244.1.10"), "ns", "two", "c3"
    )
    switch = make_switch(pods=(POD_A, pod))
    for ip in pod.ips:
        assert switch.lookup(from_a(ip)).ports == (pod.ofport,)
        assert switch.lookup(ip_packet(pod.ofport, pod.mac, GW_MAC, ip, A_IP)).ports == (
            POD_A.ofport,
        )
