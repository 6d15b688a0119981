"""Pod pairs of the datapath benchmark and how one pair is measured.

A ``Pair`` is two pod namespaces that can talk, whatever joins them (a veth, a
bare OVS bridge, Sluice on one node or on two). ``measure`` runs one iperf3
TCP test (one stream) and one 64-byte TCP ping-pong (bench/pingpong.py) from
the client pod to the server pod. The same-node set-ups that need no second
node live here too; bare OVS references are in bench/datapath_bare.py and the
two-node Sluice clusters in bench/datapath_cluster.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import NetnsPool, in_ns, netns, sh, stop_proc
from bench.node import SluiceNode, host_ifname, pod_ip, tx_checksum

IPERF_PORT = "5201"
PP_PORT = "7000"
PINGPONG = Path(__file__).with_name("pingpong.py")
LOCAL_MTU = 1450  # why: Sluice's overlay pod MTU on a 1500-byte uplink; same-node set-ups share it


@dataclass
class Pair:
    """Two pod namespaces that can talk: traffic goes client -> server_ip.

    ``facts`` holds what the report prints about the set-up (mode, tunnel,
    MTUs, TSO, which reference it is compared with).
    """

    name: str
    client: str
    server: str
    server_ip: str
    facts: dict[str, Any] = field(default_factory=dict)


def wire(a: str, b: str, mtu: int, name: str = "eth0") -> None:
    """A veth named ``name`` in both netns ``a`` and ``b``: the cable between two nodes."""
    sh("ip", "-n", a, "link", "add", name, "type", "veth", "peer", name, "netns", b)
    for ns in (a, b):
        # why both ends: a veth drops frames larger than its peer's MTU.
        sh("ip", "-n", ns, "link", "set", name, "mtu", str(mtu), "up")


def veth_pair(stack: ExitStack) -> Pair:
    """Two namespaces joined directly by a veth pair (the machine's ceiling)."""
    a, b = stack.enter_context(netns("dpva")), stack.enter_context(netns("dpvb"))
    wire(a, b, LOCAL_MTU)
    for ns, addr in ((a, "10.253.0.1/24"), (b, "10.253.0.2/24")):
        sh("ip", "-n", ns, "addr", "add", addr, "dev", "eth0")
    return Pair("veth", a, b, "10.253.0.2", {"tso": "kernel"})


def sluice_pair(stack: ExitStack, workdir: Path, tso: bool, cidr: str) -> Pair:
    """A standalone Sluice node (no API server) and two pods made through its CNI."""
    node = SluiceNode(workdir, "dpst" if tso else "dpsl", cidr, userspace_tso=tso)
    stack.callback(node.stop)
    node.start()
    pool = NetnsPool("dpsp")
    stack.callback(pool.close)
    a, b = pool.make(2)
    node.call("ADD", "cid-client", a)
    server = node.call("ADD", "cid-server", b)
    host_ifname(server)  # a well-formed result names the host veth
    name = "sluice-tso" if tso else "sluice"
    return Pair(name, a, b, pod_ip(server), {"tso": tso, "reference": "bare-ovs-tso"})


def reachable(pair: Pair, tries: int = 100) -> None:
    """Wait until the client pings the server (flows, ARP and tunnel neighbours in place)."""
    for _ in range(tries):
        argv = ["ip", "netns", "exec", pair.client, "ping", "-c", "1", "-W", "0.2", pair.server_ip]
        if subprocess.run(argv, capture_output=True).returncode == 0:
            return
    raise RuntimeError(f"{pair.name}: {pair.server_ip} unreachable")


def start_servers(stack: ExitStack, pair: Pair) -> None:
    """iperf3 and ping-pong servers in the server pod, stopped by pid afterwards."""
    iperf = subprocess.Popen(
        ["ip", "netns", "exec", pair.server, "iperf3", "-s", "-p", IPERF_PORT],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stack.callback(stop_proc, iperf)
    pp = subprocess.Popen(
        ["ip", "netns", "exec", pair.server, sys.executable, str(PINGPONG), "server", PP_PORT],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    stack.callback(stop_proc, pp)
    assert pp.stdout is not None
    if "ready" not in pp.stdout.readline():
        raise RuntimeError(f"{pair.name}: ping-pong server did not start")


def prepare(stack: ExitStack, pair: Pair) -> None:
    """Make ``pair`` ready to measure: reachable, servers up, its pod facts recorded."""
    reachable(pair)
    start_servers(stack, pair)
    pair.facts["tx_csum"] = tx_checksum(pair.client)
    pair.facts["pod_mtu"] = int(in_ns(pair.client, "cat", "/sys/class/net/eth0/mtu"))


def measure(pair: Pair, seconds: int, count: int) -> dict[str, float]:
    """One iperf3 run and one ping-pong run from client to server."""
    argv = ["iperf3", "-c", pair.server_ip, "-p", IPERF_PORT, "-t", str(seconds), "-J"]
    out = json.loads(in_ns(pair.client, *argv, timeout=seconds + 30))
    if "error" in out:
        raise RuntimeError(f"{pair.name}: iperf3: {out['error']}")
    end = out["end"]
    pp = in_ns(
        pair.client, sys.executable, str(PINGPONG), "client", pair.server_ip, PP_PORT, str(count)
    )
    return {
        "gbps": end["sum_received"]["bits_per_second"] / 1e9,
        "retransmits": end["sum_sent"].get("retransmits", 0),
        **json.loads(pp),
    }
