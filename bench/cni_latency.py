"""Benchmark 1: CNI ADD and DEL latency, Sluice vs Debian's bridge + host-local.

Each plugin gets its own node netns. Each "pod" is a fresh ``slb-*`` netns made
before the measured call. A call is timed as a runtime sees it: exec of the
plugin binary with the CNI environment and the configuration on stdin, until
it exits. The exec comes from a thread that entered the node netns, like a
runtime living in the node's network namespace.

Workloads: N sequential ADD+DEL (the two plugins alternate pod by pod, in
ABBA order), then a burst of M ADDs at concurrency 8 followed by M DELs
(reference burst, Sluice burst, reference DELs, Sluice DELs).
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.common import (
    ExecResult,
    NetnsPool,
    netns_executor,
    ratio,
    sh,
    summary_ms,
    target,
    timed_exec,
)
from bench.node import BridgeNode, PluginNode, SluiceNode

POD_CIDR_SLUICE = "10.250.8.0/21"  # /21: room for the 1000-pod burst plus the gateway
POD_CIDR_REF = "10.251.8.0/21"
CONCURRENCY = 8
ADD_P50_LIMIT = 1.2


def sizes(quick: bool) -> tuple[int, int]:
    """(sequential pods, burst pods)."""
    return (5, 16) if quick else (200, 1000)


def call(ex: ThreadPoolExecutor, node: PluginNode, cmd: str, cid: str, pod_ns: str) -> Any:
    """Submit one timed plugin call to ``ex`` (a thread pool inside the node netns)."""
    env = node.env(cmd, cid, f"/run/netns/{pod_ns}", pod_ns)
    return ex.submit(timed_exec, [str(node.binary)], env, json.dumps(node.conf()))


def stats(results: Sequence[ExecResult], wall: float | None = None) -> dict[str, Any]:
    """p50/p99/mean, total and failures of a list of calls."""
    total = wall if wall is not None else sum(r.seconds for r in results)
    out: dict[str, Any] = summary_ms([r.seconds for r in results])
    out.update(n=len(results), total_s=round(total, 3))
    out["failures"] = sum(1 for r in results if r.rc != 0)
    errors = sorted({r.stdout.strip()[:200] for r in results if r.rc != 0})
    if errors:
        out["errors"] = errors[:3]
    return out


def sequential(nodes: list[PluginNode], pool: NetnsPool, count: int) -> dict[str, Any]:
    """ADD then DEL of ``count`` pods per plugin, one at a time, alternating plugins."""
    res: dict[str, dict[str, list[ExecResult]]] = {n.kind: {"ADD": [], "DEL": []} for n in nodes}
    executors = {n.kind: netns_executor(n.ns, 1) for n in nodes}
    try:
        for i in range(count):
            order = nodes if i % 4 in (0, 3) else nodes[::-1]  # ABBA
            for node in order:
                (pod,) = pool.make(1)
                ex, cid = executors[node.kind], f"seq{i}-{node.kind}"
                res[node.kind]["ADD"].append(call(ex, node, "ADD", cid, pod).result())
                res[node.kind]["DEL"].append(call(ex, node, "DEL", cid, pod).result())
                pool.release([pod])
    finally:
        for ex in executors.values():
            ex.shutdown()
    return {k: {cmd: stats(v) for cmd, v in per.items()} for k, per in res.items()}


def burst(node: PluginNode, cmd: str, pods: Sequence[str]) -> dict[str, Any]:
    """``cmd`` for every pod at concurrency 8; per-call latency plus wall-clock total."""
    with netns_executor(node.ns, CONCURRENCY) as ex:
        list(ex.map(lambda _: None, range(CONCURRENCY)))  # why: threads enter the netns first
        start = time.perf_counter()
        futures = [call(ex, node, cmd, f"burst{i}-{node.kind}", p) for i, p in enumerate(pods)]
        results = [f.result() for f in futures]
        wall = time.perf_counter() - start
    return stats(results, wall)


def bursts(ref: PluginNode, sluice: PluginNode, pool: NetnsPool, count: int) -> dict[str, Any]:
    """Burst ADDs (reference, Sluice), then burst DELs (reference, Sluice)."""
    pods = {ref.kind: pool.make(count), sluice.kind: pool.make(count)}
    out: dict[str, dict[str, Any]] = {ref.kind: {}, sluice.kind: {}}
    for cmd in ("ADD", "DEL"):
        for node in (ref, sluice):
            out[node.kind][cmd] = burst(node, cmd, pods[node.kind])
    pool.release(pods[ref.kind] + pods[sluice.kind])
    return out


def version_cost(nodes: list[PluginNode], count: int) -> dict[str, Any]:
    """Exec cost alone: CNI VERSION, which both binaries answer without doing any work."""
    out: dict[str, list[ExecResult]] = {n.kind: [] for n in nodes}
    execs = {n.kind: netns_executor(n.ns, 1) for n in nodes}
    try:
        for i in range(count):
            for node in nodes if i % 2 else nodes[::-1]:
                env = node.env("VERSION", "", "", "")
                stdin = json.dumps({"cniVersion": "1.0.0"})
                out[node.kind].append(
                    execs[node.kind].submit(timed_exec, [str(node.binary)], env, stdin).result()
                )
    finally:
        for ex in execs.values():
            ex.shutdown()
    return {k: stats(v) for k, v in out.items()}


def server_times(log: Path, prefix: str, chunk: int = 0) -> dict[str, Any]:
    """Server-side ADD/DEL durations sluice-controller logged for ``prefix*`` containers.

    With ``chunk``: the median of each consecutive ``chunk`` calls instead (a trend).
    """
    found: dict[str, list[float]] = {"ADD": [], "DEL": []}
    for m in re.finditer(rf"CNI (ADD|DEL) {prefix}\S* rc=\d+ in ([\d.]+) ms", log.read_text()):
        found[m.group(1)].append(float(m.group(2)))
    if chunk:
        return {
            cmd: [round(statistics.median(v[i : i + chunk]), 1) for i in range(0, len(v), chunk)]
            for cmd, v in found.items()
        }
    return {cmd: summary_ms([x / 1000.0 for x in v]) for cmd, v in found.items() if v}


def spooled(node: SluiceNode, prefix: str) -> int:
    """DELs the shim could not hand to the server and spooled (it still answered success)."""
    return len(list((node.workdir / "state" / "pending-del").glob(f"{prefix}*.json")))


def check_reference(ref: BridgeNode) -> None:
    """Make sure the bridge plugin worked inside its node netns (not the host's)."""
    sh("ip", "-n", ref.ns, "link", "show", "cni0")


def rows(seq: dict[str, Any], bur: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per (workload, command, plugin) with the ratio to the reference."""
    out = []
    for workload, data in (("sequential", seq), (f"burst c={CONCURRENCY}", bur)):
        for cmd in ("ADD", "DEL"):
            ref = data["bridge"][cmd]
            for kind in ("bridge", "sluice"):
                row = {"workload": workload, "command": cmd, "plugin": kind, **data[kind][cmd]}
                row["ratio_p50"] = ratio(row["p50_ms"], ref["p50_ms"])
                row["ratio_total"] = ratio(row["total_s"], ref["total_s"])
                row.pop("errors", None)
                out.append(row)
    return out


COLUMNS = ["workload", "command", "plugin", "n", "p50_ms", "p99_ms", "total_s", "failures"]


def run(workdir: Path, quick: bool = False) -> dict[str, Any]:
    """Run the CNI latency benchmark; return its result record."""
    n_seq, n_burst = sizes(quick)
    with ExitStack() as stack:
        pool = NetnsPool("pod")
        stack.callback(pool.close)
        ref = BridgeNode(workdir / "ref", "cniref", POD_CIDR_REF)
        stack.callback(ref.stop)
        sluice = SluiceNode(workdir / "sluice", "cnisl", POD_CIDR_SLUICE)
        stack.callback(sluice.stop)
        ref.start()
        sluice.start()
        data: dict[str, Any] = {"shim": sluice.shim}
        data["version"] = version_cost([ref, sluice], n_seq)
        data["seq"] = sequential([ref, sluice], pool, n_seq)
        check_reference(ref)
        data["burst"] = bursts(ref, sluice, pool, n_burst)
        data["spooled"] = {w: spooled(sluice, w) for w in ("seq", "burst")}
        data["server"] = server_times(sluice.workdir / "controller.log", "seq")
        chunk = max(1, n_burst // 10)
        data["trend"] = server_times(sluice.workdir / "controller.log", "burst", chunk)
    return report(data, n_seq, n_burst)


def report(data: dict[str, Any], n_seq: int, n_burst: int) -> dict[str, Any]:
    """The result record: the table, the exec/server breakdown and the ADD target."""
    seq, bur = data["seq"], data["burst"]
    add_ratio = ratio(seq["sluice"]["ADD"]["p50_ms"], seq["bridge"]["ADD"]["p50_ms"])
    title = "CNI calls (ms per call; total = sum for sequential, wall clock for burst)"
    return {
        "name": "cni",
        "title": "CNI ADD and DEL latency",
        "params": {
            "sequential_pods": n_seq,
            "burst_pods": n_burst,
            "concurrency": CONCURRENCY,
            "pod_cidr_prefix": 21,
            "reference": "Debian containernetworking-plugins bridge (cni0) + host-local",
            "sluice_shim": data["shim"],
        },
        "tables": [
            {
                "title": title,
                "columns": [*COLUMNS, "ratio_p50", "ratio_total"],
                "rows": rows(seq, bur),
            }
        ],
        "breakdown": {
            "exec_only_version_p50_ms": {k: v["p50_ms"] for k, v in data["version"].items()},
            "sluice_server_side_sequential_ms": data["server"],
            "sluice_dels_spooled_by_the_shim": data["spooled"],
            "sluice_server_side_burst_median_ms_per_tenth": data["trend"],
        },
        "errors": {
            f"{k} {c}": v[c]["errors"] for k, v in bur.items() for c in v if "errors" in v[c]
        },
        "targets": [target("ADD p50 <= 1.2x reference", add_ratio, ADD_P50_LIMIT)],
    }
