"""Per-node flows: the pipeline skeleton and the gateway (gw0).

No flow uses the NORMAL action: every ARP a pod or the host can need is
answered by ARPResponder (local pod IPs, the gateway IP, and - for the host
only - any other cluster IP), and every IPv4 packet is routed by
L3Forwarding. Unanswerable ARP and non-IPv4 traffic is dropped.
"""

from __future__ import annotations

from flows import cookies, fields
from flows.cookies import Category
from flows.fields import CT_ZONE, CtState
from flows.ir import LOCAL, Ct, Flow, Match, Output, SetField
from flows.model import NodeConfig
from flows.pipeline import (
    ARP_RESPONDER,
    CLASSIFIER,
    CONNTRACK_COMMIT,
    CONNTRACK_STATE,
    CONNTRACK_ZONE,
    L3_FORWARDING,
    OUTPUT,
    SPOOF_GUARD,
    TABLES,
    Priority,
    next_table,
)
from flows.recipes import ARP, ARP_REQUEST, GLOBAL_VIRTUAL_MAC, IP, arp_reply, forward
from flows.table import Miss


def pipeline_flows(node: NodeConfig, *, round_: int = 1) -> list[Flow]:
    """Return the node's fixed flows: table misses, infra-port classifiers, conntrack, output.

    Args:
        node: this node's configuration.
        round_: cookie round to mint cookies with.
    Returns:
        Flows of category PIPELINE (object id 0). Pure; no side effects.
    """
    cookie = cookies.make(round_, Category.PIPELINE, 0)
    flows = [*_miss_flows(cookie), *_infra_port_flows(node, cookie)]
    if not node.overlay:
        flows += _host_uplink_flows(node, cookie)
    if node.mode == "underlay":
        flows += _underlay_flows(node, cookie)
    flows += _conntrack_flows(cookie)
    out_set = fields.OUTPUT_PORT_SET.match()
    flows.append(
        Flow(OUTPUT, Priority.NORMAL, (out_set,), (fields.TARGET_OFPORT.output(),), cookie)
    )
    return flows


def _miss_flows(cookie: int) -> list[Flow]:
    # why: explicit priority-0 flows make each table's miss visible in dumps and
    # replace the priority-0 NORMAL flow OVS puts in table 0 of a new bridge.
    flows = []
    for table in TABLES:
        following = next_table(table)
        goto = (following.goto(),) if table.miss is Miss.NEXT and following else ()
        flows.append(Flow(table, Priority.MISS, (), goto, cookie))
    return flows


def _infra_port_flows(node: NodeConfig, cookie: int) -> list[Flow]:
    ports = [(node.gateway_ofport, fields.FROM_GATEWAY)]
    if node.tunnels:
        ports.append((node.tunnel_ofport, fields.FROM_TUNNEL))
    if not node.overlay:
        ports.append((node.uplink_ofport, fields.FROM_UPLINK))
    flows = []
    for ofport, mark in ports:
        in_port = Match("in_port", ofport)
        actions = (mark.load(), SPOOF_GUARD.goto())
        flows.append(Flow(CLASSIFIER, Priority.NORMAL, (in_port,), actions, cookie))
        if mark is not fields.FROM_GATEWAY:
            # why: tunnel/uplink carry only routed IPv4 from other nodes; no ARP.
            flow = Flow(
                SPOOF_GUARD, Priority.NORMAL, (IP, in_port), (CONNTRACK_ZONE.goto(),), cookie
            )
            flows.append(flow)
    return flows


def _host_uplink_flows(node: NodeConfig, cookie: int) -> list[Flow]:
    """Routing mode: the uplink NIC is a br-int port and the node IP lives on LOCAL.

    # why: pods reach other nodes' pods through the uplink with no encapsulation,
    # so the NIC must be on br-int; the host keeps its address on the bridge's own
    # port and its traffic is passed straight between LOCAL and the uplink.
    """
    uplink = Match("in_port", node.uplink_ofport)
    return [
        Flow(
            CLASSIFIER,
            Priority.HIGH,
            (Match("in_port", LOCAL),),
            (Output(node.uplink_ofport),),
            cookie,
        ),
        Flow(CLASSIFIER, Priority.HIGH, (ARP, uplink), (Output(LOCAL),), cookie),
        Flow(
            CLASSIFIER,
            Priority.HIGH,
            (IP, uplink, Match("ip_dst", node.node_ip)),
            (Output(LOCAL),),
            cookie,
        ),
    ]


def _underlay_flows(node: NodeConfig, cookie: int) -> list[Flow]:
    """Underlay: pod IPs are addresses of the fabric's subnet, so fabric hosts reach them.

    This node answers the fabric's ARP for its podCIDRs with its uplink MAC (the
    fabric sees each node as the owner of its pod range). IPv4 for a local pod
    from a fabric host that runs no Sluice goes up to the host, which routes it
    to the pod through gw0 and sees the replies the same way back.
    # why the detour: the pod's reply leaves through gw0 (the fabric host is no
    # cluster destination), so the host's conntrack must see both directions or
    # kube-proxy's INVALID drop would kill the connection; traffic from the
    # cluster CIDR (pods of other nodes) stays on the direct path.
    """
    uplink = Match("in_port", node.uplink_ofport)
    to_pipeline = (fields.FROM_UPLINK.load(), SPOOF_GUARD.goto())
    flows = []
    for cidr in node.pod_cidrs:
        asks = (ARP, uplink, Match("arp_tpa", cidr), ARP_REQUEST)
        answer = arp_reply(str(node.uplink_mac))
        to_pod = (IP, uplink, Match("ip_dst", cidr))
        from_pods = (*to_pod, Match("ip_src", node.cluster_cidr))
        flows += [
            Flow(CLASSIFIER, Priority.TOP, asks, answer, cookie),
            Flow(CLASSIFIER, Priority.HIGH, to_pod, (Output(LOCAL),), cookie),
            Flow(CLASSIFIER, Priority.TOP, from_pods, to_pipeline, cookie),
        ]
    return flows


def _conntrack_flows(cookie: int) -> list[Flow]:
    track = Ct(zone=CT_ZONE, table=CONNTRACK_STATE, nat=True)
    invalid = Match("ct_state", *fields.ct_state(CtState.INV | CtState.TRK))
    new = Match("ct_state", *fields.ct_state(CtState.NEW | CtState.TRK))
    # why: a connection that entered from gw0 (e.g. the host DNATed a Service
    # to a pod) must have its replies sent back through gw0 so the host can undo
    # the NAT; the ct_mark remembers that for L3Forwarding.
    mark_gw = Ct(zone=CT_ZONE, commit=True, exec_=(fields.CT_FROM_GATEWAY.load(),))
    commit = Ct(zone=CT_ZONE, commit=True)
    from_gw = fields.FROM_GATEWAY.match()
    return [
        Flow(CONNTRACK_ZONE, Priority.NORMAL, (IP,), (track,), cookie),
        Flow(CONNTRACK_STATE, Priority.NORMAL, (IP, invalid), (), cookie),
        Flow(CONNTRACK_COMMIT, Priority.HIGH, (IP, new, from_gw), (mark_gw, OUTPUT.goto()), cookie),
        Flow(CONNTRACK_COMMIT, Priority.NORMAL, (IP, new), (commit, OUTPUT.goto()), cookie),
    ]


def gateway_flows(node: NodeConfig, *, round_: int = 1) -> list[Flow]:
    """Return the gw0 flows: host traffic in, ARP answers, routes to the host.

    Includes: gw0 IPv4/ARP admitted by SpoofGuard (host to pod goes on to
    L3Forwarding), the gateway IP answered with the gw0 MAC, the host's ARP for
    other cluster IPs answered with ``GLOBAL_VIRTUAL_MAC``, the route to the
    gateway IP, replies of gw0-initiated connections back to gw0, and the
    default route: IPv4 from a pod that is for no local pod and no remote pod
    CIDR goes to gw0.

    Returns flows of category GATEWAY (object id = gateway ofport). Pure.
    """
    cookie = cookies.make(round_, Category.GATEWAY, node.gateway_ofport)
    in_port = Match("in_port", node.gateway_ofport)
    admit = [
        Flow(SPOOF_GUARD, Priority.NORMAL, (IP, in_port), (CONNTRACK_ZONE.goto(),), cookie),
        Flow(SPOOF_GUARD, Priority.NORMAL, (ARP, in_port), (ARP_RESPONDER.goto(),), cookie),
    ]
    return admit + _gateway_arp_flows(node, cookie) + _gateway_route_flows(node, cookie)


def _gateway_arp_flows(node: NodeConfig, cookie: int) -> list[Flow]:
    gw_ip = (ARP, Match("arp_tpa", node.gateway_ip), ARP_REQUEST)
    host_asks = (ARP, fields.FROM_GATEWAY.match(), Match("arp_tpa", node.cluster_cidr), ARP_REQUEST)
    return [
        Flow(
            ARP_RESPONDER,
            Priority.NORMAL,
            gw_ip,
            arp_reply(node.gateway_mac, node.gateway_ip),
            cookie,
        ),
        Flow(ARP_RESPONDER, Priority.LOW, host_asks, arp_reply(GLOBAL_VIRTUAL_MAC), cookie),
    ]


def _gateway_route_flows(node: NodeConfig, cookie: int) -> list[Flow]:
    to_gw = (
        SetField("eth_dst", node.gateway_mac),
        *forward(fields.TO_GATEWAY, node.gateway_ofport),
    )
    reply = Match("ct_state", *fields.ct_state(CtState.RPL | CtState.TRK))
    # why: ClusterIPs exist only in the host's kube-proxy rules; steering the
    # Service CIDR to gw0 by name keeps that true in every mode, whatever else
    # L3Forwarding learns to route (underlay pods are fabric addresses).
    services = (
        [
            Flow(
                L3_FORWARDING,
                Priority.NORMAL,
                (IP, Match("ip_dst", node.service_cidr)),
                to_gw,
                cookie,
            )
        ]
        if node.service_cidr
        else []
    )
    return services + [
        Flow(L3_FORWARDING, Priority.NORMAL, (IP, Match("ip_dst", node.gateway_ip)), to_gw, cookie),
        Flow(
            L3_FORWARDING, Priority.HIGH, (IP, reply, fields.CT_FROM_GATEWAY.match()), to_gw, cookie
        ),
        Flow(L3_FORWARDING, Priority.LOW, (IP, fields.FROM_POD.match()), to_gw, cookie),
    ]
