"""Benchmark 4: pod-to-pod datapath, Sluice's pipeline vs bare OVS vs a veth, per mode.

Three phases; the set-ups of a phase exist at once and are measured in
interleaved rounds (rotating order), so a ratio between two of them is the
median of per-round ratios taken seconds apart:

* ``same-node`` - one node, MTU 1450 (Sluice's overlay pod MTU) everywhere:
  ``sluice`` (standalone SluiceNode, OVS without userspace TSO, so the CNI
  turns the pods' TX checksum offload off), ``sluice-tso`` (with it),
  ``bare-ovs-tso`` (a NORMAL bridge with TSO: the reference), ``bare-ovs``
  (without TSO), ``veth`` (two pods joined by a veth pair: the ceiling).
* ``overlay`` - two nodes joined by a wire (bench/datapath_cluster.py), TSO
  off as OVS 3.1 requires with a tunnel port: Sluice with VXLAN and with
  Geneve, each on a 1500- and a 9000-byte wire (pod MTU = wire - 50,
  computed by the controller), each against a bare OVS tunnel of the same
  kind and MTU (bench/datapath_bare.py), plus ``bare-wire-tso``: two NORMAL
  bridges with TSO on a plain wire, the fastest bare cross-node set-up.
* ``routed`` - Sluice in routing and in underlay mode (no tunnel, so TSO on)
  against ``bare-wire-tso``, in more rounds (its pairs are few, its
  throughput the most variable).

Each measurement is one iperf3 TCP run (one stream) and one 64-byte TCP
ping-pong (bench/pingpong.py). The two cross-node phases share one API
server (Node objects are how a controller learns its peers) and need the
Kubernetes build of ``python -m sandbox.k8sbuild``; without it they are
skipped and the record says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import apiserver
from bench.common import loadavg
from bench.datapath_bare import bare_ovs, bare_tunnel, bare_wire
from bench.datapath_cluster import Cluster, PairSpec, sluice_cross
from bench.datapath_pairs import LOCAL_MTU, Pair, measure, prepare, sluice_pair, veth_pair
from bench.datapath_report import SAME_NODE, Facts, Runs, Samples, report
from bench.node import CLUSTER_CIDR
from cni import install

OVERLAY_SPECS = (
    PairSpec("sluice-vxlan", "overlay", "vxlan", 1500, "192.0.2.0/28",
             ("10.250.32.0/24", "10.250.33.0/24"), CLUSTER_CIDR, "bare-vxlan"),
    PairSpec("sluice-geneve", "overlay", "geneve", 1500, "192.0.2.16/28",
             ("10.250.34.0/24", "10.250.35.0/24"), CLUSTER_CIDR, "bare-geneve"),
    PairSpec("sluice-vxlan-mtu9000", "overlay", "vxlan", 9000, "192.0.2.32/28",
             ("10.250.36.0/24", "10.250.37.0/24"), CLUSTER_CIDR, "bare-vxlan-mtu9000"),
    PairSpec("sluice-geneve-mtu9000", "overlay", "geneve", 9000, "192.0.2.48/28",
             ("10.250.38.0/24", "10.250.39.0/24"), CLUSTER_CIDR, "bare-geneve-mtu9000"),
)  # fmt: skip
# why underlay on its own subnet: its pod ranges are parts of the wire's subnet.
ROUTED_SPECS = (
    PairSpec("sluice-routing", "routing", "vxlan", 1500, "192.0.2.64/28",
             ("10.250.40.0/24", "10.250.41.0/24"), CLUSTER_CIDR, "bare-wire-tso"),
    PairSpec("sluice-underlay", "underlay", "vxlan", 1500, "198.51.100.0/24",
             ("198.51.100.128/28", "198.51.100.144/28"), "198.51.100.128/26", "bare-wire-tso"),
)  # fmt: skip


@dataclass(frozen=True)
class Phase:
    """Set-ups that exist at once and are measured in interleaved rounds."""

    name: str
    build: Callable[[ExitStack], list[Pair]]
    rounds: int


def sizes(quick: bool) -> tuple[int, int, int]:
    """(rounds, iperf3 seconds, ping-pong round trips)."""
    return (1, 1, 200) if quick else (3, 3, 1000)


def same_node(stack: ExitStack, workdir: Path) -> list[Pair]:
    """The same-node set-ups, in the order they are reported."""
    return [
        sluice_pair(stack, workdir / "sluice", False, "10.250.16.0/24"),
        sluice_pair(stack, workdir / "sluice-tso", True, "10.250.17.0/24"),
        bare_ovs(stack, workdir / "bare-tso", True),
        bare_ovs(stack, workdir / "bare", False),
        veth_pair(stack),
    ]


def cross_node(
    stack: ExitStack, workdir: Path, cluster: Cluster, specs: tuple[PairSpec, ...]
) -> list[Pair]:
    """Sluice pairs for ``specs``, their bare references, and ``bare-wire-tso``."""
    pairs = [sluice_cross(stack, cluster, spec, workdir / spec.name) for spec in specs]
    for spec in specs:
        if spec.mode == "overlay":
            ref = workdir / spec.reference
            pairs.append(bare_tunnel(stack, ref, spec.tunnel, spec.wire_mtu))
    pairs.append(bare_wire(stack, workdir / "bare-wire-tso"))
    return pairs


def background_cluster(outer: ExitStack, workdir: Path) -> Callable[[], Cluster]:
    """Start a Cluster in a thread now; return the call that waits for it.

    # why: its ≈ 10 s start then overlaps the same-node phase's set-up; idle, etcd
    # and kube-apiserver took ≈ 0.03 of a core beside the measurements.
    """
    cluster = Cluster(workdir)
    pool = ThreadPoolExecutor(1)
    future = pool.submit(cluster.start)

    def stop() -> None:
        wait([future])
        pool.shutdown()
        cluster.stop()

    outer.callback(stop)
    return future.result


def phases(outer: ExitStack, workdir: Path, quick: bool, cross: bool, rounds: int) -> list[Phase]:
    """The phases to run; the cross-node ones share a Cluster stopped by ``outer``."""
    plan = [Phase(SAME_NODE, lambda s: same_node(s, workdir / "same"), rounds)]
    if not cross:
        return plan
    cluster = background_cluster(outer, workdir / "cp")
    # why quick keeps one pair per phase: the smoke test covers both TSO paths.
    overlay = OVERLAY_SPECS[:1] if quick else OVERLAY_SPECS
    routed = ROUTED_SPECS[:1] if quick else ROUTED_SPECS
    # why 2n-1 rounds for routed (5; 1 when quick): it has the fewest pairs, so rounds
    # are cheap, and its TSO throughput (loss-driven at the wire) varies the most.
    return plan + [
        Phase("overlay", lambda s: cross_node(s, workdir / "overlay", cluster(), overlay), rounds),
        Phase(
            "routed", lambda s: cross_node(s, workdir / "routed", cluster(), routed), 2 * rounds - 1
        ),
    ]


def interleave(
    stack: ExitStack, pairs: list[Pair], rounds: int, seconds: int, count: int
) -> dict[str, Runs]:
    """Prepare every pair, then ``rounds`` rounds measuring each once in rotating order."""
    for pair in pairs:
        prepare(stack, pair)
    samples: dict[str, Runs] = {pair.name: [] for pair in pairs}
    for r in range(rounds):
        for k in range(len(pairs)):
            pair = pairs[(r + k) % len(pairs)]
            samples[pair.name].append(measure(pair, seconds, count))
    return samples


def run(workdir: Path, quick: bool = False) -> dict[str, Any]:
    """Run the datapath benchmark; return its result record."""
    rounds, seconds, count = sizes(quick)
    missing = apiserver.binaries_missing()
    # why here: nodes start two at a time and each would run `make cni-shim`.
    install.build_native()
    samples: Samples = {}
    facts: Facts = {}
    # why: the machine is shared; a phase's load average shows what else ran meanwhile.
    load: dict[str, str] = {}
    with ExitStack() as outer:
        for phase in phases(outer, workdir, quick, not missing, rounds):
            started, before = time.monotonic(), loadavg()[0]
            with ExitStack() as stack:
                pairs = phase.build(stack)
                samples[phase.name] = interleave(stack, pairs, phase.rounds, seconds, count)
                facts[phase.name] = {pair.name: pair.facts for pair in pairs}
            took = time.monotonic() - started
            load[phase.name] = (
                f"{phase.rounds} rounds, {took:.0f} s, load {before} -> {loadavg()[0]}"
            )
    params = {
        "iperf3_seconds": seconds,
        "pingpong_round_trips": count,
        "same_node_mtu": LOCAL_MTU,
        "cross_node": "skipped, missing: " + ", ".join(missing) if missing else "measured",
        "userspace_tso": "on for routing and underlay, off with a tunnel port (overlay, hybrid)",
        "phases": load,
    }
    return report(samples, facts, params)
