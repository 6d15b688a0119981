"""Two fake nodes running the compiled pipeline plus policy flows, and a packet walker.

``TwoNodes(pods, namespaces, policies).delivered(src, dst, protocol, port)``
sends the first packet of a new connection the way it would travel: from the
source pod's port (or, for an outside source, in through gw0 of the
destination's node), across the tunnel to the other node if needed, and says
whether it reached the destination (the pod's port, or gw0 for an outside
address). ``flows.policy_eval.allowed`` must agree with it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import replace

from flows.desired import desired_flows
from flows.diff import diff
from flows.fake_table import FakeTable, LookupResult, ip_packet
from flows.fields import CtState
from flows.ir import Flow
from flows.model import NodeConfig, PodPort, RemoteNode
from flows.oxm import IP_PROTO_ICMP, IP_PROTO_SCTP, IP_PROTO_TCP, IP_PROTO_UDP
from flows.policy import flows_for_policies
from flows.policy_model import NamespaceMeta, PodMeta, Policy
from tests.unit.flows.sample import NODE as NODE_A
from tests.unit.flows.sample import install

NODE_B = NodeConfig(
    name="node-b",
    node_ip="192.168.10.12",
    pod_cidrs=("10.244.2.0/24",),
    gateway_ip="10.244.2.1",
    gateway_mac="02:00:00:00:02:01",
    cluster_cidr="10.244.0.0/16",
    service_cidr="10.96.0.0/12",
)
NODES = (NODE_A, NODE_B)
L4 = {
    "TCP": (IP_PROTO_TCP, "tcp_src", "tcp_dst"),
    "UDP": (IP_PROTO_UDP, "udp_src", "udp_dst"),
    "SCTP": (IP_PROTO_SCTP, "sctp_src", "sctp_dst"),
}
# header fields that cross the wire (registers and conntrack state do not)
_WIRE = {"eth_type", "ip_src", "ip_dst", "ip_proto", "nw_ttl"} | {
    f for v in L4.values() for f in v[1:]
}
Endpoint = PodMeta | str


def mac_of(ofport: int) -> str:
    """A pod MAC derived from its ofport."""
    return f"02:00:00:00:{ofport >> 8:02x}:{ofport & 0xFF:02x}"


def node_of(ip: str) -> NodeConfig | None:
    """The node whose pod CIDR holds ``ip``; ``None`` outside the pod network."""
    address = ipaddress.IPv4Address(ip)
    return next((n for n in NODES if address in ipaddress.IPv4Network(n.pod_cidrs[0])), None)


def remote_for(node: NodeConfig) -> RemoteNode:
    """The other node, as ``node`` routes to it."""
    other = NODE_B if node is NODE_A else NODE_A
    return RemoteNode(other.name, other.node_ip, other.pod_cidrs)


def view(pods: Iterable[PodMeta], node: NodeConfig) -> list[PodMeta]:
    """``pods`` as ``node`` sees them: ofport only for its own pods."""
    return [p if p.ips and node_of(p.ips[0]) is node else replace(p, ofport=None) for p in pods]


def node_flows(
    node: NodeConfig,
    pods: list[PodMeta],
    namespaces: list[NamespaceMeta],
    policies: list[Policy],
    round_: int = 1,
) -> dict[str, frozenset[Flow]]:
    """Everything ``node`` installs: pipeline, gateway, pods, remote node, policy."""
    local = [p for p in view(pods, node) if p.ofport is not None]
    ports = [
        PodPort(p.ofport, mac_of(p.ofport), p.ips, p.namespace, p.name, f"c-{p.key}")
        for p in local
        if p.ofport is not None
    ]
    desired = desired_flows(node, ports, [remote_for(node)], round_=round_)
    policy = flows_for_policies(policies, view(pods, node), namespaces, node, round_)
    assert not set(desired) & set(policy)
    return desired | policy


class TwoNodes:
    """Two fake br-ints with every batch installed twice (faucet-style idempotence)."""

    def __init__(
        self, pods: list[PodMeta], namespaces: list[NamespaceMeta], policies: list[Policy]
    ) -> None:
        self.pods, self.namespaces, self.policies = pods, namespaces, policies
        self.tables: dict[str, FakeTable] = {}
        self.desired: dict[str, dict[str, frozenset[Flow]]] = {}
        for node in NODES:
            table, desired = FakeTable(), node_flows(node, pods, namespaces, policies)
            for flows in desired.values():
                install(table, flows)
            assert diff(desired, {"all": table.flows()}).empty
            self.tables[node.name], self.desired[node.name] = table, desired

    def delivered(
        self, src: Endpoint, dst: Endpoint, protocol: str, port: int | None, ct_state: int = 0
    ) -> bool:
        """Whether a packet ``src`` -> ``dst`` reaches ``dst`` (see the module docstring)."""
        src_ip, dst_ip = _ip(src), _ip(dst)
        src_node, dst_node = node_of(src_ip), node_of(dst_ip)
        if isinstance(src, PodMeta) and src_node is not None:
            node, in_port, mac = src_node, src.ofport, mac_of(src.ofport or 0)
        else:
            assert dst_node is not None, "one end must be a pod"
            node, in_port, mac = dst_node, dst_node.gateway_ofport, dst_node.gateway_mac
        packet = _packet(in_port or 0, mac, node.gateway_mac, src_ip, dst_ip, protocol, port)
        if ct_state:
            packet["ct_state"] = ct_state
        result = self.tables[node.name].lookup(packet)
        if dst_node is None:
            return result.ports == (node.gateway_ofport,)
        if dst_node is not node:
            result = self._across(result, node, dst_node, ct_state)
        return result.ports == (_ofport(dst),)

    def _across(
        self, result: LookupResult, node: NodeConfig, dst_node: NodeConfig, ct_state: int
    ) -> LookupResult:
        if result.ports != (node.tunnel_ofport,):
            return result
        wire = {k: v for k, v in result.emitted[0].packet.items() if k in _WIRE}
        packet = wire | {"in_port": dst_node.tunnel_ofport, "eth_src": "02:00:00:00:99:99"}
        packet["eth_dst"] = "aa:bb:cc:dd:ee:ff"
        if ct_state:
            packet["ct_state"] = ct_state
        return self.tables[dst_node.name].lookup(packet)

    def flow_count(self, node: NodeConfig = NODE_A) -> int:
        """Number of flows installed on ``node``."""
        return len(self.tables[node.name].flows())


def _ip(endpoint: Endpoint) -> str:
    return endpoint.ips[0] if isinstance(endpoint, PodMeta) else endpoint


def _ofport(endpoint: Endpoint) -> int | None:
    return endpoint.ofport if isinstance(endpoint, PodMeta) else None


def _packet(
    in_port: int,
    eth_src: str,
    eth_dst: str,
    src: str,
    dst: str,
    protocol: str,
    port: int | None,
) -> dict:
    packet = ip_packet(in_port, eth_src, eth_dst, src, dst)
    if protocol in L4:
        proto, src_field, dst_field = L4[protocol]
        packet |= {"ip_proto": proto, src_field: 40000, dst_field: port or 0}
    else:
        packet["ip_proto"] = IP_PROTO_ICMP
    return packet


# -- the harness itself ------------------------------------------------------------------

WEB = PodMeta("prod", "web", {"app": "web"}, ("10.244.1.2",), 32768)
DB = PodMeta("prod", "db", {"app": "db"}, ("10.244.2.3",), 32768)


def test_without_policies_everything_is_delivered_both_ways_and_across_nodes():
    nodes = TwoNodes([WEB, DB], [NamespaceMeta("prod")], [])
    for protocol in ("TCP", "UDP", "SCTP", "ICMP"):
        assert nodes.delivered(WEB, DB, protocol, 80)
        assert nodes.delivered(DB, WEB, protocol, 80)
        assert nodes.delivered(WEB, "8.8.8.8", protocol, 80)
        assert nodes.delivered("8.8.8.8", DB, protocol, 80)


def test_established_packets_are_delivered_even_when_everything_is_denied():
    deny_all = Policy("prod", "deny", policy_types=("Ingress", "Egress"))
    nodes = TwoNodes([WEB, DB], [NamespaceMeta("prod")], [deny_all])
    assert not nodes.delivered(WEB, DB, "TCP", 80)
    established = CtState.TRK | CtState.EST
    assert nodes.delivered(WEB, DB, "TCP", 80, ct_state=established)
    assert nodes.delivered(DB, WEB, "TCP", 80, ct_state=established | CtState.RPL)
