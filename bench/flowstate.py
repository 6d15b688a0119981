"""The synthetic node state of the flow-programming benchmark (pure; no OVS).

One node on 10.128.0.0/24 in cluster 10.128.0.0/12, ``pods`` local pods and
``remotes`` remote nodes (one /24 each, node IPs in 172.16.0.0/16), overlay.
"""

from __future__ import annotations

import ipaddress

from controller.state import NodeState
from flows.model import NodeConfig, PodPort, RemoteNode
from ovsdb import schema

CLUSTER = "10.128.0.0/12"
GW_MAC = "0a:58:0a:80:00:01"
NAMESPACES = 10  # pods are spread over ns-0..ns-9 (bench.flowpolicy labels them)


def node() -> NodeConfig:
    """This node."""
    return NodeConfig(
        name="bench-node",
        node_ip="172.16.0.1",
        pod_cidrs=("10.128.0.0/24",),
        gateway_ip="10.128.0.1",
        gateway_mac=GW_MAC,
        cluster_cidr=CLUSTER,
        mode="overlay",
        tunnel_type="vxlan",
    )


def pods(count: int) -> list[PodPort]:
    """``count`` local pods on ofports 32768.. with addresses 10.128.0.2..."""
    base = ipaddress.IPv4Address("10.128.0.2")
    return [
        PodPort(
            ofport=schema.POD_OFPORT_MIN + i,
            mac=f"0a:58:0a:80:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}",
            ips=(str(base + i),),
            namespace=f"ns-{i % NAMESPACES}",
            name=f"pod-{i}",
            container_id=f"cid{i:05d}",
        )
        for i in range(count)
    ]


def remotes(count: int) -> list[RemoteNode]:
    """``count`` remote nodes, each with the next /24 of the cluster CIDR."""
    subnets = ipaddress.IPv4Network(CLUSTER).subnets(new_prefix=24)
    next(subnets)  # ours
    hosts = ipaddress.IPv4Network("172.16.0.0/16").hosts()
    next(hosts)  # ours
    return [
        RemoteNode(f"node-{i + 1}", str(next(hosts)), (str(next(subnets)),)) for i in range(count)
    ]


def state(n_pods: int, n_remotes: int) -> NodeState:
    """A NodeState holding the synthetic node, its pods and the remote nodes."""
    st = NodeState()
    st.set_node(node())
    for pod in pods(n_pods):
        st.set_pod(pod)
    for remote in remotes(n_remotes):
        st.set_remote(remote)
    return st
