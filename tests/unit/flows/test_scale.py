"""Flow counts stay linear: one L3 flow per remote pod CIDR, nothing else per node."""

from __future__ import annotations

import ipaddress
from collections import Counter

from flows import cookies
from flows.desired import desired_flows
from flows.fake_table import FakeTable, ip_packet
from flows.model import NodeConfig, RemoteNode
from flows.pipeline import L3_FORWARDING
from tests.unit.flows.sample import GW_MAC, POD_A

N = 1000
NODE = NodeConfig(
    name="node-0",
    node_ip="172.16.0.1",
    pod_cidrs=("10.128.0.0/24",),
    gateway_ip="10.128.0.1",
    gateway_mac=GW_MAC,
    cluster_cidr="10.128.0.0/12",
)


def remotes() -> list[RemoteNode]:
    subnets = ipaddress.IPv4Network("10.128.0.0/12").subnets(new_prefix=24)
    next(subnets)  # ours
    hosts = ipaddress.IPv4Network("172.16.0.0/16").hosts()
    next(hosts)
    return [RemoteNode(f"node-{i + 1}", str(next(hosts)), (str(next(subnets)),)) for i in range(N)]


def test_a_thousand_remote_nodes_give_exactly_one_l3_flow_each():
    nodes = remotes()
    desired = desired_flows(NODE, (), nodes)
    for remote in nodes:
        (flow,) = desired[remote.key]
        assert flow.table is L3_FORWARDING
        assert flow.matches()["ip_dst"].value == remote.pod_cidrs[0].split("/")[0]
    per_object = Counter(cookies.object_of(f.cookie) for r in nodes for f in desired[r.key])
    assert len(per_object) == N  # no CRC-32 collisions among these names
    table = FakeTable()
    for flows in desired.values():
        table.add_all(flows)
    l3 = [f for f in table.flows() if f.table is L3_FORWARDING]
    assert len(l3) == N + 4  # + gateway IP, default route, gw-reply, table miss
    last = nodes[-1]
    dst = str(ipaddress.IPv4Network(last.pod_cidrs[0])[5])
    result = table.lookup(ip_packet(NODE.gateway_ofport, GW_MAC, POD_A.mac, NODE.node_ip, dst))
    assert result.emitted[0].packet["tun_dst"] == last.node_ip
