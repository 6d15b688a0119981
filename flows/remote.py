"""Flows that route to the pods of another node."""

from __future__ import annotations

from flows import cookies, fields
from flows.cookies import Category
from flows.ir import Action, DecTtl, Flow, Match, SetField
from flows.model import NodeConfig, RemoteNode
from flows.pipeline import L3_FORWARDING, Priority
from flows.recipes import IP, forward


def flows_for_remote_node(remote: RemoteNode, node: NodeConfig, *, round_: int = 1) -> list[Flow]:
    """Return exactly one L3Forwarding flow per pod CIDR of ``remote``.

    Overlay: dec_ttl, ``tun_dst`` := remote node IP (and ``tun_id`` := VNI if
    configured), output to the tunnel port. Routing/underlay: dec_ttl,
    eth_src := our uplink MAC, eth_dst := the remote's uplink MAC, output to
    the uplink. Hybrid: routed when ``node.routes_to(remote)`` (same uplink
    subnet), else tunnelled. The receiving node rewrites the inner MACs for its pod.

    Raises ``ValueError`` if routing/underlay and ``remote.uplink_mac`` is unset.
    Returns flows of category REMOTE_NODE (object id = CRC-32 of the name). Pure.
    """
    cookie = cookies.make(round_, Category.REMOTE_NODE, cookies.node_object_id(remote.name))
    actions = (
        _routed_actions(remote, node) if node.routes_to(remote) else _overlay_actions(remote, node)
    )
    return [
        Flow(L3_FORWARDING, Priority.NORMAL, (IP, Match("ip_dst", cidr)), actions, cookie)
        for cidr in remote.pod_cidrs
    ]


def _overlay_actions(remote: RemoteNode, node: NodeConfig) -> tuple[Action, ...]:
    tunnel: tuple[Action, ...] = (SetField("tun_dst", remote.node_ip),)
    if node.vni is not None:
        tunnel += (SetField("tun_id", node.vni),)
    return (DecTtl(), *tunnel, *forward(fields.TO_TUNNEL, node.tunnel_ofport))


def _routed_actions(remote: RemoteNode, node: NodeConfig) -> tuple[Action, ...]:
    if remote.uplink_mac is None or node.uplink_mac is None:
        raise ValueError(f"node {remote.name}: uplink_mac is required in {node.mode} mode")
    macs = (SetField("eth_src", node.uplink_mac), SetField("eth_dst", remote.uplink_mac))
    return (DecTtl(), *macs, *forward(fields.TO_UPLINK, node.uplink_ofport))
