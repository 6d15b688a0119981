"""Flows for one pod interface on this node."""

from __future__ import annotations

from flows import cookies, fields
from flows.cookies import Category
from flows.ir import DecTtl, Flow, Match, SetField
from flows.model import NodeConfig, PodPort, in_any
from flows.pipeline import (
    ARP_RESPONDER,
    CLASSIFIER,
    CONNTRACK_ZONE,
    L3_FORWARDING,
    SPOOF_GUARD,
    Priority,
)
from flows.recipes import ARP, ARP_REQUEST, IP, arp_reply, forward


def flows_for_pod(pod: PodPort, node: NodeConfig, *, round_: int = 1) -> list[Flow]:
    """Return every flow that plugs ``pod`` into br-int.

    Per interface: classify by ``in_port``. Per pod IP: let only the pod's own
    MAC+IP out (ARP: sha+spa too), answer ARP for the IP with the pod's MAC,
    and route packets for the IP to the pod (eth_src := gateway MAC,
    eth_dst := pod MAC, dec_ttl, output by ofport).

    Raises ``ValueError`` if a pod IP is outside the node's pod CIDRs.
    Returns flows of category POD (object id = ofport). Pure.
    """
    for ip in pod.ips:
        if not in_any(ip, node.pod_cidrs):
            raise ValueError(f"pod {pod.namespace}/{pod.name}: {ip} not in {node.pod_cidrs}")
    cookie = cookies.make(round_, Category.POD, pod.ofport)
    in_port = Match("in_port", pod.ofport)
    classify = (fields.FROM_POD.load(), SPOOF_GUARD.goto())
    flows = [Flow(CLASSIFIER, Priority.NORMAL, (in_port,), classify, cookie)]
    for ip in pod.ips:
        flows += _ip_flows(pod, node, ip, cookie)
    return flows


def _ip_flows(pod: PodPort, node: NodeConfig, ip: str, cookie: int) -> list[Flow]:
    in_port, mac = Match("in_port", pod.ofport), Match("eth_src", pod.mac)
    ip_guard = (IP, in_port, mac, Match("ip_src", ip))
    arp_guard = (ARP, in_port, mac, Match("arp_spa", ip), Match("arp_sha", pod.mac))
    to_pod = (
        SetField("eth_src", node.gateway_mac),
        SetField("eth_dst", pod.mac),
        DecTtl(),
        *forward(fields.TO_POD, pod.ofport),
    )
    n = Priority.NORMAL
    return [
        Flow(SPOOF_GUARD, n, ip_guard, (CONNTRACK_ZONE.goto(),), cookie),
        Flow(SPOOF_GUARD, n, arp_guard, (ARP_RESPONDER.goto(),), cookie),
        Flow(
            ARP_RESPONDER,
            n,
            (ARP, Match("arp_tpa", ip), ARP_REQUEST),
            arp_reply(pod.mac, ip),
            cookie,
        ),
        Flow(L3_FORWARDING, n, (IP, Match("ip_dst", ip)), to_pod, cookie),
    ]
