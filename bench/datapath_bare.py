"""Bare Open vSwitch references for the datapath benchmark: NORMAL bridges, no controller.

* ``bare_ovs`` - one node: a netdev bridge, one ``priority=0,actions=NORMAL``
  flow, two veth-attached pods (with or without userspace TSO).
* ``bare_wire`` - two nodes: each a NORMAL bridge with its pod, the two
  bridges joined by a veth "wire" that is a port of both. No tunnel is
  involved, so userspace TSO is on: OVS's fastest working configuration.
* ``bare_tunnel`` - two nodes: each a NORMAL bridge with its pod and a VXLAN
  or Geneve port to the other node's IP, which sits on a second bridge
  ``br-phy`` holding the wire (on the userspace datapath OVS can only send
  encapsulated packets through an OVS bridge). TSO is off: OVS 3.1 drops
  offloaded packets sent to a tunnel port.

Every node is a ``slb-*`` netns with its own OVS (sandbox.ovs), removed by the
caller's ExitStack.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from bench.common import in_ns, netns, sh
from bench.datapath_pairs import LOCAL_MTU, Pair, wire
from sandbox.ovs import OvsInstance

BRIDGE = "br0"
TUNNEL_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN/Geneve 8 + inner Ethernet 14
UNDERLAY_NET = "192.0.2"


def bare_node(stack: ExitStack, workdir: Path, tag: str, tso: bool) -> tuple[str, OvsInstance]:
    """A node netns with its own OVS and an empty netdev bridge ``br0``."""
    node = stack.enter_context(netns(tag))
    ovs = stack.enter_context(OvsInstance(workdir, node, userspace_tso=tso))
    ovs.vsctl("add-br", BRIDGE, "--", "set", "Bridge", BRIDGE, "datapath_type=netdev")
    return node, ovs


def add_pod(
    stack: ExitStack, node: str, ovs: OvsInstance, host_if: str, addr: str, mtu: int, tso: bool
) -> str:
    """A pod netns whose eth0 (``addr``) is a veth attached to ``br0``; returns the pod netns."""
    pod = stack.enter_context(netns("dpbp"))
    sh(
        "ip", "-n", node, "link", "add", host_if, "mtu", str(mtu),
        "type", "veth", "peer", "eth0", "netns", pod,
    )  # fmt: skip
    sh("ip", "-n", node, "link", "set", host_if, "up")
    sh("ip", "-n", pod, "addr", "add", addr, "dev", "eth0")
    sh("ip", "-n", pod, "link", "set", "eth0", "mtu", str(mtu), "up")
    if not tso:
        # why: without userspace TSO OVS forwards partial checksums untouched and
        # the receiving TCP drops the segments (testbed notes).
        in_ns(pod, "ethtool", "-K", "eth0", "tx", "off")
    ovs.vsctl("add-port", BRIDGE, host_if)
    return pod


def normal_only(ovs: OvsInstance, bridge: str = BRIDGE) -> None:
    """Replace the bridge's flows by a single NORMAL flow."""
    ovs.ofctl("del-flows", bridge)
    ovs.ofctl("add-flow", bridge, "priority=0,actions=NORMAL")


def bare_ovs(stack: ExitStack, workdir: Path, tso: bool) -> Pair:
    """One netdev bridge with a NORMAL flow and two veth-attached pods."""
    node, ovs = bare_node(stack, workdir, "dpbo", tso)
    pods = [
        add_pod(stack, node, ovs, f"bo{i}", f"10.252.0.{i + 2}/24", LOCAL_MTU, tso)
        for i in range(2)
    ]
    normal_only(ovs)
    name = "bare-ovs-tso" if tso else "bare-ovs"
    return Pair(name, pods[0], pods[1], "10.252.0.3", {"tso": tso})


def bare_wire(stack: ExitStack, workdir: Path, mtu: int = 1500) -> Pair:
    """Two NORMAL bridges with userspace TSO, one pod each, joined by a wire."""
    nodes = [bare_node(stack, workdir / f"n{i}", f"dpw{i}", True) for i in range(2)]
    wire(nodes[0][0], nodes[1][0], mtu)
    pods = []
    for i, (node, ovs) in enumerate(nodes):
        ovs.vsctl("add-port", BRIDGE, "eth0")
        pods.append(add_pod(stack, node, ovs, "bw0", f"10.252.1.{i + 2}/24", mtu, True))
        normal_only(ovs)
    facts = {"mode": "-", "tunnel": "-", "wire_mtu": mtu, "tso": True}
    return Pair("bare-wire-tso", pods[0], pods[1], "10.252.1.3", facts)


def bare_tunnel(stack: ExitStack, workdir: Path, kind: str, wire_mtu: int) -> Pair:
    """Two NORMAL bridges without TSO, one pod each, joined by a ``kind`` tunnel over a wire."""
    nodes = [bare_node(stack, workdir / f"n{i}", f"dpt{i}", False) for i in range(2)]
    wire(nodes[0][0], nodes[1][0], wire_mtu)
    pod_mtu = wire_mtu - TUNNEL_OVERHEAD
    pods = []
    for i, (node, ovs) in enumerate(nodes):
        local, remote = f"{UNDERLAY_NET}.{i + 1}", f"{UNDERLAY_NET}.{2 - i}"
        _underlay_bridge(node, ovs, f"{local}/24", wire_mtu)
        ovs.vsctl(
            "add-port", BRIDGE, "tun0", "--", "set", "Interface", "tun0", f"type={kind}",
            f"options:remote_ip={remote}", f"options:local_ip={local}",
        )  # fmt: skip
        pods.append(add_pod(stack, node, ovs, "bt0", f"10.252.2.{i + 2}/24", pod_mtu, False))
        normal_only(ovs)
    suffix = "" if wire_mtu == 1500 else f"-mtu{wire_mtu}"
    facts = {"mode": "-", "tunnel": kind, "wire_mtu": wire_mtu, "tso": False}
    return Pair(f"bare-{kind}{suffix}", pods[0], pods[1], "10.252.2.3", facts)


def _underlay_bridge(node: str, ovs: OvsInstance, addr: str, mtu: int) -> None:
    """``br-phy`` holding the wire, with the node IP on its internal port."""
    ovs.vsctl(
        "add-br", "br-phy", "--", "set", "Bridge", "br-phy", "datapath_type=netdev",
        "--", "add-port", "br-phy", "eth0",
    )  # fmt: skip
    sh("ip", "-n", node, "link", "set", "br-phy", "mtu", str(mtu), "up")
    sh("ip", "-n", node, "addr", "add", addr, "dev", "br-phy")
