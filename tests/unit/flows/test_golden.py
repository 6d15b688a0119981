"""Golden, order-free sets of rendered flows for a small state (2 pods, gw0, 1 remote node).

Reviewed by hand: a change here is a change of what br-int does.
"""
# ruff: noqa: E501 - golden flow lines are kept whole so they can be grepped in dumps

from __future__ import annotations

from dataclasses import replace

import pytest

from flows import cookies
from flows.desired import desired_flows
from flows.model import PodPort
from flows.node import gateway_flows, pipeline_flows
from flows.pod import flows_for_pod
from flows.remote import flows_for_remote_node
from flows.render import render, render_all
from tests.unit.flows.sample import NODE, POD_A, POD_B, REMOTE, ROUTED_NODE, all_flows

PIPELINE = {
    "cookie=0x1010000000000, table=Classifier, priority=200,in_port=1 actions=load:0x1->NXM_NX_REG0[0..3],goto_table:SpoofGuard",
    "cookie=0x1010000000000, table=Classifier, priority=200,in_port=2 actions=load:0x2->NXM_NX_REG0[0..3],goto_table:SpoofGuard",
    "cookie=0x1010000000000, table=Classifier, priority=0 actions=drop",
    "cookie=0x1010100000000, table=SpoofGuard, priority=200,ip,in_port=1 actions=goto_table:ConntrackZone",
    "cookie=0x1010100000000, table=SpoofGuard, priority=0 actions=drop",
    "cookie=0x1010200000000, table=ARPResponder, priority=0 actions=drop",
    "cookie=0x1010300000000, table=ConntrackZone, priority=200,ip actions=ct(table=ConntrackState,zone=65520,nat)",
    "cookie=0x1010300000000, table=ConntrackZone, priority=0 actions=goto_table:ConntrackState",
    "cookie=0x1010400000000, table=ConntrackState, priority=200,ct_state=+inv+trk,ip actions=drop",
    "cookie=0x1010400000000, table=ConntrackState, priority=0 actions=goto_table:ServiceLB",
    "cookie=0x1010500000000, table=ServiceLB, priority=0 actions=goto_table:EgressRule",
    "cookie=0x1010600000000, table=EgressRule, priority=0 actions=goto_table:EgressDefault",
    "cookie=0x1010700000000, table=EgressDefault, priority=0 actions=goto_table:L3Forwarding",
    "cookie=0x1010800000000, table=L3Forwarding, priority=0 actions=drop",
    "cookie=0x1010900000000, table=IngressRule, priority=0 actions=goto_table:IngressDefault",
    "cookie=0x1010a00000000, table=IngressDefault, priority=0 actions=goto_table:ConntrackCommit",
    "cookie=0x1010b00000000, table=ConntrackCommit, priority=210,ct_state=+new+trk,ip,reg0=0x2/0xf actions=ct(commit,zone=65520,exec(load:0x1->NXM_NX_CT_MARK[0])),goto_table:Output",
    "cookie=0x1010b00000000, table=ConntrackCommit, priority=200,ct_state=+new+trk,ip actions=ct(commit,zone=65520),goto_table:Output",
    "cookie=0x1010b00000000, table=ConntrackCommit, priority=0 actions=goto_table:Output",
    "cookie=0x1010c00000000, table=Output, priority=200,reg0=0x100/0x100 actions=output:NXM_NX_REG1[]",
    "cookie=0x1010c00000000, table=Output, priority=0 actions=drop",
}
GATEWAY = {
    "cookie=0x1020100000002, table=SpoofGuard, priority=200,arp,in_port=2 actions=goto_table:ARPResponder",
    "cookie=0x1020100000002, table=SpoofGuard, priority=200,ip,in_port=2 actions=goto_table:ConntrackZone",
    "cookie=0x1020200000002, table=ARPResponder, priority=200,arp,arp_tpa=10.244.1.1,arp_op=1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:02:00:00:00:01:01->eth_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:02:00:00:00:01:01->arp_sha,move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:10.244.1.1->arp_spa,IN_PORT",
    "cookie=0x1020200000002, table=ARPResponder, priority=100,arp,reg0=0x2/0xf,arp_tpa=10.244.0.0/16,arp_op=1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:aa:bb:cc:dd:ee:ff->eth_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:aa:bb:cc:dd:ee:ff->arp_sha,move:NXM_OF_ARP_TPA[]->NXM_NX_REG2[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],move:NXM_NX_REG2[]->NXM_OF_ARP_SPA[],IN_PORT",
    "cookie=0x1020800000002, table=L3Forwarding, priority=210,ct_state=+rpl+trk,ct_mark=0x1/0x1,ip actions=set_field:02:00:00:00:01:01->eth_dst,load:0x2->NXM_NX_REG1[],load:0x2->NXM_NX_REG0[4..7],load:0x1->NXM_NX_REG0[8],goto_table:IngressRule",
    "cookie=0x1020800000002, table=L3Forwarding, priority=200,ip,nw_dst=10.244.1.1 actions=set_field:02:00:00:00:01:01->eth_dst,load:0x2->NXM_NX_REG1[],load:0x2->NXM_NX_REG0[4..7],load:0x1->NXM_NX_REG0[8],goto_table:IngressRule",
    "cookie=0x1020800000002, table=L3Forwarding, priority=200,ip,nw_dst=10.96.0.0/12 actions=set_field:02:00:00:00:01:01->eth_dst,load:0x2->NXM_NX_REG1[],load:0x2->NXM_NX_REG0[4..7],load:0x1->NXM_NX_REG0[8],goto_table:IngressRule",
    "cookie=0x1020800000002, table=L3Forwarding, priority=100,ip,reg0=0x3/0xf actions=set_field:02:00:00:00:01:01->eth_dst,load:0x2->NXM_NX_REG1[],load:0x2->NXM_NX_REG0[4..7],load:0x1->NXM_NX_REG0[8],goto_table:IngressRule",
}
POD_A_FLOWS = {
    "cookie=0x1030000008000, table=Classifier, priority=200,in_port=32768 actions=load:0x3->NXM_NX_REG0[0..3],goto_table:SpoofGuard",
    "cookie=0x1030100008000, table=SpoofGuard, priority=200,arp,in_port=32768,dl_src=02:00:0a:f4:01:02,arp_spa=10.244.1.2,arp_sha=02:00:0a:f4:01:02 actions=goto_table:ARPResponder",
    "cookie=0x1030100008000, table=SpoofGuard, priority=200,ip,in_port=32768,dl_src=02:00:0a:f4:01:02,nw_src=10.244.1.2 actions=goto_table:ConntrackZone",
    "cookie=0x1030200008000, table=ARPResponder, priority=200,arp,arp_tpa=10.244.1.2,arp_op=1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:02:00:0a:f4:01:02->eth_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:02:00:0a:f4:01:02->arp_sha,move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:10.244.1.2->arp_spa,IN_PORT",
    "cookie=0x1030800008000, table=L3Forwarding, priority=200,ip,nw_dst=10.244.1.2 actions=set_field:02:00:00:00:01:01->eth_src,set_field:02:00:0a:f4:01:02->eth_dst,dec_ttl,load:0x8000->NXM_NX_REG1[],load:0x3->NXM_NX_REG0[4..7],load:0x1->NXM_NX_REG0[8],goto_table:IngressRule",
}
REMOTE_OVERLAY = {
    "cookie=0x10408e1901c11, table=L3Forwarding, priority=200,ip,nw_dst=10.244.2.0/24 actions=dec_ttl,set_field:192.168.10.12->tun_dst,load:0x1->NXM_NX_REG1[],load:0x1->NXM_NX_REG0[4..7],load:0x1->NXM_NX_REG0[8],goto_table:IngressRule",
}
REMOTE_ROUTING = {
    "cookie=0x10408e1901c11, table=L3Forwarding, priority=200,ip,nw_dst=10.244.2.0/24 actions=dec_ttl,set_field:02:00:c0:a8:0a:0b->eth_src,set_field:02:00:c0:a8:0a:0c->eth_dst,load:0x3->NXM_NX_REG1[],load:0x4->NXM_NX_REG0[4..7],load:0x1->NXM_NX_REG0[8],goto_table:IngressRule",
}


def rendered(flows) -> set[str]:
    lines = [render(f) for f in flows]
    assert len(lines) == len(set(lines)), "a builder produced the same flow twice"
    return set(lines)


def test_pipeline_flows_golden():
    assert rendered(pipeline_flows(NODE)) == PIPELINE


def test_gateway_flows_golden():
    assert rendered(gateway_flows(NODE)) == GATEWAY


def test_pod_flows_golden():
    assert rendered(flows_for_pod(POD_A, NODE)) == POD_A_FLOWS


def test_second_pod_differs_only_in_its_own_values():
    expected = {
        line.replace("00008000, table=", "00008001, table=")  # object id in the cookie
        .replace("32768", "32769")
        .replace("0x8000->", "0x8001->")
        .replace(POD_A.mac, POD_B.mac)
        .replace(POD_A.ips[0], POD_B.ips[0])
        for line in POD_A_FLOWS
    }
    assert rendered(flows_for_pod(POD_B, NODE)) == expected


def test_remote_node_overlay_golden():
    assert rendered(flows_for_remote_node(REMOTE, NODE)) == REMOTE_OVERLAY


def test_remote_node_routing_golden():
    assert rendered(flows_for_remote_node(REMOTE, ROUTED_NODE)) == REMOTE_ROUTING


def test_vni_sets_tun_id_after_tun_dst():
    (flow,) = flows_for_remote_node(REMOTE, replace(NODE, vni=100))
    assert "set_field:192.168.10.12->tun_dst,set_field:0x64->tun_id," in render(flow)


def test_routing_mode_classifies_uplink_instead_of_tunnel():
    lines = rendered(pipeline_flows(ROUTED_NODE))
    assert (
        "cookie=0x1010000000000, table=Classifier, priority=200,in_port=3 actions=load:0x4->NXM_NX_REG0[0..3],goto_table:SpoofGuard"
        in lines
    )
    assert (
        "cookie=0x1010100000000, table=SpoofGuard, priority=200,ip,in_port=3 actions=goto_table:ConntrackZone"
        in lines
    )
    assert not any("in_port=1 " in line for line in lines)


def test_every_cookie_carries_its_table_id():
    desired = desired_flows(NODE, [POD_A, POD_B], [REMOTE])
    for flow in (f for flows in desired.values() for f in flows):
        assert cookies.table_of(flow.cookie) == flow.table.table_id
        assert cookies.round_of(flow.cookie) == 1


def test_cookie_priority_match_is_unique_across_tables():
    # why: recookie_flow's Nicira flow-mod applies to all tables at once.
    flows = all_flows(desired_flows(ROUTED_NODE, [POD_A, POD_B], [REMOTE]))
    flows += all_flows(desired_flows(NODE, [POD_A, POD_B], [REMOTE]))
    keys = {(f.cookie, f.priority, f.match) for f in flows}
    assert len(keys) == len({f.identity for f in flows})


def test_whole_node_state_is_the_union_of_the_goldens():
    desired = desired_flows(NODE, [POD_A, POD_B], [REMOTE])
    assert set(desired) == {"pipeline", "gateway", POD_A.key, POD_B.key, REMOTE.key}
    lines = {render(f) for flows in desired.values() for f in flows}
    assert lines >= PIPELINE | GATEWAY | POD_A_FLOWS | REMOTE_OVERLAY
    assert len(lines) == sum(len(flows) for flows in desired.values())


def test_numeric_rendering_uses_declaration_order_table_ids():
    lines = render_all(pipeline_flows(NODE), names=False)
    assert "cookie=0x1010000000000, table=0, priority=0 actions=drop" in lines
    assert (
        "cookie=0x1010300000000, table=3, priority=200,ip actions=ct(table=4,zone=65520,nat)"
        in lines
    )
    assert (
        "cookie=0x1010c00000000, table=12, priority=200,reg0=0x100/0x100 actions=output:NXM_NX_REG1[]"
        in lines
    )


def test_pod_ip_outside_pod_cidr_is_rejected():
    stray = PodPort(32770, "02:00:00:00:00:09", ("10.244.9.9",), "ns", "stray", "c9")
    with pytest.raises(ValueError, match="10.244.9.9"):
        flows_for_pod(stray, NODE)
