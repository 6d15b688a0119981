"""Benchmark 3: same-node pod-to-pod datapath, Sluice's pipeline vs bare OVS vs a veth.

Set-ups (all exist at once, each in its own ``slb-*`` namespaces; MTU 1450
everywhere, Sluice's overlay pod MTU):

* ``sluice`` - a SluiceNode (OVS without userspace TSO, the default); two pods
  made by the CNI, so their TX checksum offload is off; sluice-controller's flows.
* ``sluice-tso`` - the same with ``userspace-tso-enable=true`` (the CNI then
  leaves checksum offload on).
* ``bare-ovs-tso`` - the reference: a netdev bridge with userspace TSO and one
  ``priority=0,actions=NORMAL`` flow, two veth-attached pod namespaces.
* ``bare-ovs`` - the same without TSO (pod TX checksum off, or TCP fails), the
  like-for-like reference for the default ``sluice`` set-up.
* ``veth`` - two namespaces joined by one veth pair (the machine's ceiling).

Each round runs every set-up once, in rotating order: iperf3 TCP throughput
(one stream, ``-t`` seconds) and a 64-byte TCP ping-pong (bench/pingpong.py,
RTT percentiles). Cross-node traffic is not measured: see ``CROSS_NODE``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import NetnsPool, in_ns, netns, sh, stop_proc, target
from bench.node import SluiceNode, host_ifname, pod_ip, tx_checksum
from sandbox.ovs import OvsInstance

MTU = "1450"
IPERF_PORT = "5201"
PP_PORT = "7000"
LIMIT = 0.9
PINGPONG = Path(__file__).with_name("pingpong.py")
CROSS_NODE = (
    "not measured: sluice-controller learns remote nodes only from Kubernetes Node objects, "
    "so a two-node tunnel set-up needs an API server (the sandbox has one); not done here"
)


@dataclass
class Pair:
    """Two pod namespaces that can talk: traffic goes client -> server_ip."""

    name: str
    client: str
    server: str
    server_ip: str


def sizes(quick: bool) -> tuple[int, int, int]:
    """(rounds, iperf3 seconds, ping-pong round trips)."""
    return (1, 1, 200) if quick else (5, 5, 2000)


def veth_pair(stack: ExitStack) -> Pair:
    """Two namespaces joined directly by a veth pair."""
    a, b = stack.enter_context(netns("dpva")), stack.enter_context(netns("dpvb"))
    sh("ip", "-n", a, "link", "add", "eth0", "mtu", MTU, "type", "veth", "peer", "eth0", "netns", b)
    for ns, addr in ((a, "10.253.0.1/24"), (b, "10.253.0.2/24")):
        sh("ip", "-n", ns, "addr", "add", addr, "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
    return Pair("veth", a, b, "10.253.0.2")


def bare_ovs(stack: ExitStack, workdir: Path, tso: bool) -> Pair:
    """A netdev bridge with a single NORMAL flow and two veth-attached pods."""
    node = stack.enter_context(netns("dpbo"))
    ovs = stack.enter_context(OvsInstance(workdir, node, userspace_tso=tso))
    ovs.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev")
    pods = [stack.enter_context(netns("dpbp")) for _ in range(2)]
    for i, pod in enumerate(pods):
        host = f"bo{i}"
        sh("ip", "-n", node, "link", "add", host, "mtu", MTU, "type", "veth", "peer", "eth0")
        sh("ip", "-n", node, "link", "set", "eth0", "netns", pod)
        sh("ip", "-n", node, "link", "set", host, "up")
        sh("ip", "-n", pod, "addr", "add", f"10.252.0.{i + 2}/24", "dev", "eth0")
        sh("ip", "-n", pod, "link", "set", "eth0", "mtu", MTU, "up")
        if not tso:
            in_ns(pod, "ethtool", "-K", "eth0", "tx", "off")
        ovs.vsctl("add-port", "br0", host)
    ovs.ofctl("del-flows", "br0")
    ovs.ofctl("add-flow", "br0", "priority=0,actions=NORMAL")
    return Pair("bare-ovs-tso" if tso else "bare-ovs", pods[0], pods[1], "10.252.0.3")


def sluice_pair(stack: ExitStack, workdir: Path, tso: bool, cidr: str) -> Pair:
    """A Sluice node and two pods made through its CNI."""
    node = SluiceNode(workdir, "dpst" if tso else "dpsl", cidr, userspace_tso=tso)
    stack.callback(node.stop)
    node.start()
    pool = NetnsPool("dpsp")
    stack.callback(pool.close)
    a, b = pool.make(2)
    node.call("ADD", "cid-client", a)
    server = node.call("ADD", "cid-server", b)
    host_ifname(server)  # a well-formed result names the host veth
    return Pair("sluice-tso" if tso else "sluice", a, b, pod_ip(server))


def reachable(pair: Pair, tries: int = 50) -> None:
    """Wait until the client pings the server (flows learned, ARP answered)."""
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


def measure(pair: Pair, seconds: int, count: int) -> dict[str, float]:
    """One iperf3 run and one ping-pong run from client to server."""
    argv = ["iperf3", "-c", pair.server_ip, "-p", IPERF_PORT, "-t", str(seconds), "-J"]
    out = json.loads(in_ns(pair.client, *argv, timeout=seconds + 30))
    end = out["end"]
    pp = in_ns(
        pair.client, sys.executable, str(PINGPONG), "client", pair.server_ip, PP_PORT, str(count)
    )
    return {
        "gbps": end["sum_received"]["bits_per_second"] / 1e9,
        "retransmits": end["sum_sent"].get("retransmits", 0),
        **json.loads(pp),
    }


def setups(stack: ExitStack, workdir: Path) -> list[Pair]:
    """Every set-up, in the order they are reported."""
    return [
        sluice_pair(stack, workdir / "sluice", False, "10.250.16.0/24"),
        sluice_pair(stack, workdir / "sluice-tso", True, "10.250.17.0/24"),
        bare_ovs(stack, workdir / "bare-tso", True),
        bare_ovs(stack, workdir / "bare", False),
        veth_pair(stack),
    ]


def run(workdir: Path, quick: bool = False) -> dict[str, Any]:
    """Run the datapath benchmark; return its result record."""
    rounds, seconds, count = sizes(quick)
    samples: dict[str, list[dict[str, float]]] = {}
    csum: dict[str, str] = {}
    with ExitStack() as stack:
        pairs = setups(stack, workdir)
        for pair in pairs:
            reachable(pair)
            start_servers(stack, pair)
            csum[pair.name] = tx_checksum(pair.client)
            samples[pair.name] = []
        for r in range(rounds):
            for k in range(len(pairs)):
                pair = pairs[(r + k) % len(pairs)]
                samples[pair.name].append(measure(pair, seconds, count))
    return report(samples, csum, rounds, seconds, count)


def paired_ratio(runs: list[dict[str, float]], ref: list[dict[str, float]]) -> float:
    """Median of the per-round throughput ratios (a round measures both seconds apart)."""
    return round(
        statistics.median(r["gbps"] / b["gbps"] for r, b in zip(runs, ref, strict=True)), 3
    )


def row(
    name: str, runs: list[dict[str, float]], csum: str, ref: list[dict[str, float]]
) -> dict[str, Any]:
    """Median over rounds of each metric, plus the paired throughput ratio to ``ref``."""
    gbps = statistics.median(r["gbps"] for r in runs)
    return {
        "setup": name,
        "tx_csum": csum,
        "gbps": round(gbps, 2),
        "gbps_min": round(min(r["gbps"] for r in runs), 2),
        "gbps_max": round(max(r["gbps"] for r in runs), 2),
        "retransmits": int(statistics.median(r["retransmits"] for r in runs)),
        "rtt_p50_us": statistics.median(r["p50_us"] for r in runs),
        "rtt_p99_us": statistics.median(r["p99_us"] for r in runs),
        "ratio_to_bare_tso": paired_ratio(runs, ref),
    }


def targets(by: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Pipeline throughput >= 90 % of the bare bridge, with and without TSO on Sluice's side."""
    return [
        target(f"{name} >= 90% of bare-ovs-tso", by[name]["ratio_to_bare_tso"], LIMIT, True)
        for name in ("sluice-tso", "sluice")
    ]


def report(
    samples: dict[str, list[dict[str, float]]],
    csum: dict[str, str],
    rounds: int,
    seconds: int,
    count: int,
) -> dict[str, Any]:
    """The result record and its targets."""
    ref = samples["bare-ovs-tso"]
    rows = [row(name, runs, csum[name], ref) for name, runs in samples.items()]
    by = {r["setup"]: r for r in rows}
    title = (
        "iperf3 TCP (1 stream) and 64-byte TCP ping-pong RTT, medians of rounds; "
        "ratio = median of per-round ratios"
    )
    return {
        "name": "datapath",
        "title": "Datapath: same-node pod to pod",
        "params": {
            "rounds": rounds,
            "iperf3_seconds": seconds,
            "pingpong_round_trips": count,
            "mtu": int(MTU),
            "cross_node": CROSS_NODE,
            "sluice_vs_bare_ovs_without_tso": paired_ratio(samples["sluice"], samples["bare-ovs"]),
            "sluice_tso_vs_bare_ovs_tso": by["sluice-tso"]["ratio_to_bare_tso"],
        },
        "tables": [{"title": title, "columns": list(rows[0].keys()), "rows": rows}],
        "targets": targets(by),
    }
