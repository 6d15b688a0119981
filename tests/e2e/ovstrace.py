"""``ovs-appctl ofproto/trace`` of synthetic packets on a sandbox node's real br-int.

Used where the sandbox cannot send the real thing (this kernel has no SCTP
sockets): a packet is described by its headers, the trace runs it through
every table Sluice installed (conntrack answered by ``--ct-next``), and the
verdict is read from the datapath actions it ends with.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass

from sandbox.node import Node
from sandbox.sluice_node import ovs_env

PROTO_FIELDS = {"tcp": "tcp_dst", "udp": "udp_dst", "sctp": "sctp_dst"}


@dataclass(frozen=True)
class PodPort:
    """A pod's port on br-int: OpenFlow and datapath port numbers, MAC and IP."""

    name: str
    ofport: int
    odp_port: int
    mac: str
    ip: str


def _run(node: Node, *cmd: str) -> str:
    res = subprocess.run(
        list(cmd), capture_output=True, text=True, env={**os.environ, **ovs_env(node)}, check=True
    )
    return res.stdout


def odp_ports(node: Node) -> dict[str, int]:
    """br-int port name → datapath port number (``dpif/show``)."""
    out = _run(node, "ovs-appctl", "dpif/show")
    return {m[1]: int(m[3]) for m in re.finditer(r"^\s+(\S+) (\d+)/(\d+):", out, re.M)}


def pod_port(node: Node, key: str) -> PodPort:
    """The br-int port of pod ``ns/name`` on *node*, from OVSDB and the datapath."""
    ns, name = key.split("/")
    out = _run(
        node,
        "ovs-vsctl",
        f"--db=unix:{node.dir / 'ovs' / 'db.sock'}",
        "--format=json",
        "--columns=name,ofport,external_ids",
        "find",
        "Interface",
        f"external_ids:sluice-pod-namespace={ns}",
        f"external_ids:sluice-pod-name={name}",
    )
    ((ifname, ofport, ext),) = json.loads(out)["data"]
    ids = dict(ext[1])
    ip = ids["sluice-ips"].split(",")[0].split("/")[0]
    return PodPort(ifname, int(ofport), odp_ports(node)[ifname], ids["sluice-mac"], ip)


def gateway_mac(node: Node) -> str:
    """MAC of the node's gw0 (the pods' next hop)."""
    out = _run(node, "ovs-vsctl", "--bare", "--columns=mac_in_use", "find", "Interface", "name=gw0")
    return out.strip()


def trace(node: Node, src: PodPort, dst: PodPort, proto: str, port: int) -> str:
    """Trace a new connection's first packet from *src* to *dst* on *node*'s br-int;
    return the trace's "Datapath actions" line."""
    flow = (
        f"in_port={src.ofport},{proto},dl_src={src.mac},dl_dst={gateway_mac(node)},"
        f"nw_src={src.ip},nw_dst={dst.ip},nw_ttl=64,{PROTO_FIELDS[proto]}={port}"
    )
    out = _run(node, "ovs-appctl", "ofproto/trace", "br-int", flow, "--ct-next", "trk,new")
    lines = [ln for ln in out.splitlines() if ln.startswith("Datapath actions:")]
    assert lines, out
    return lines[-1]


def delivered(actions: str, dst: PodPort) -> bool:
    """Whether a "Datapath actions" line outputs to *dst*'s datapath port."""
    outputs = re.findall(r"(?:^|[ ,:(])(\d+)(?=$|[ ,)])", actions.split(":", 1)[1])
    return str(dst.odp_port) in outputs and "drop" not in actions
