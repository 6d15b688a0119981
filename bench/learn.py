"""Benchmark 4: learn latency, from the CNI's OVSDB commit / ADD return to the pod's flows.

A SluiceNode; pods are added one at a time through the installed shim (from a
thread inside the node netns, like benchmark 1). Two watchers run beside it:

* ``bench.ofpoll.PodFlowPoller`` - polls br-int every millisecond over
  OpenFlow for table-0 (Classifier) flows with a pod cookie and stamps when
  their count grows. Sluice sends all of a pod's flows in one atomic bundle,
  so that is when the pod's flows are installed.
* the reference: ``ovsdb-client monitor ... Interface name,ofport`` stamps
  when any OVSDB client can first see the CNI's committed Interface row with
  its ofport (the event sluice-controller learns pods from).

Reported per pod: OVSDB row visible -> flows (the controller's learn + program
time; the issue wants <= 50 ms), ADD return -> flows (what a runtime sees), and
ADD return -> OVSDB row (negative: the CNI waits for the ofport before it returns).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.common import (
    TOOL_PATH,
    NetnsPool,
    netns_executor,
    percentile,
    stop_proc,
    target,
    wait_until,
)
from bench.node import SluiceNode, host_ifname
from bench.ofpoll import PodFlowPoller

LIMIT_MS = 50.0
POD_CIDR = "10.250.24.0/24"
GAP = 0.05


def sizes(quick: bool) -> int:
    """Number of pods."""
    return 5 if quick else 60


class LineWatcher:
    """A child process whose stdout lines are stamped on arrival and parsed to keys."""

    def __init__(self, argv: list[str], env: dict[str, str], parse: Callable[[str], Any]) -> None:
        self.seen: dict[Any, float] = {}
        self._parse = parse
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.perf_counter()
            for key in self._parse(line):
                self.seen.setdefault(key, now)

    def stop(self) -> None:
        """Stop the child by pid."""
        stop_proc(self.proc)
        self._thread.join(5)


def ovsdb_names(line: str) -> list[str]:
    """Interface names whose new row carries an ofport (ovsdb-client JSON monitor)."""
    try:
        data = json.loads(line)["data"]
    except (ValueError, KeyError, TypeError):
        return []
    return [row[2] for row in data if row[1] in ("insert", "new") and isinstance(row[3], int)]


def timed_add(node: SluiceNode, cid: str, pod: str) -> tuple[float, dict[str, Any]]:
    """One ADD through the shim; return (its exit time, its result)."""
    env = node.env("ADD", cid, f"/run/netns/{pod}", pod)
    proc = subprocess.run(
        [str(node.binary)], input=json.dumps(node.conf()), env=env, capture_output=True, text=True
    )
    done = time.perf_counter()
    if proc.returncode != 0:
        raise RuntimeError(f"ADD failed: {proc.stdout}")
    return done, json.loads(proc.stdout)


def one_pod(
    node: SluiceNode, ex: Any, flows: PodFlowPoller, rows: LineWatcher, i: int, pod: str
) -> dict[str, float]:
    """Add pod ``i`` (the ``i+1``-th); wait for its flows; return the latencies in ms."""
    done, result = ex.submit(timed_add, node, f"learn{i}", pod).result()
    name = host_ifname(result)
    wait_until(
        lambda: flows.first_reaching(i + 1) is not None and name in rows.seen,
        10.0,
        f"flows of {name}",
        step=0.002,
    )
    installed = flows.first_reaching(i + 1) or 0.0
    return {
        "ovsdb_to_flows": (installed - rows.seen[name]) * 1000,
        "add_to_flows": (installed - done) * 1000,
        "add_to_ovsdb": (rows.seen[name] - done) * 1000,
    }


def run(workdir: Path, quick: bool = False) -> dict[str, Any]:
    """Run the learn-latency benchmark; return its result record."""
    count = sizes(quick)
    samples: list[dict[str, float]] = []
    with ExitStack() as stack:
        node = SluiceNode(workdir, "learn", POD_CIDR)
        stack.callback(node.stop)
        node.start()
        pool = NetnsPool("lrnp")
        stack.callback(pool.close)
        assert node.ovs is not None
        argv = ["ovsdb-client", "monitor", node.ovs.db_remote, "Open_vSwitch", "Interface"]
        env = {"PATH": TOOL_PATH, **node.ovs.env}
        rows = LineWatcher([*argv, "name,ofport", "--format=json"], env, ovsdb_names)
        stack.callback(rows.stop)
        flows = PodFlowPoller(str(node.ovs.workdir / "br-int.mgmt"))
        stack.callback(flows.stop)
        ex = netns_executor(node.ns, 1)
        stack.callback(ex.shutdown)
        for i, pod in enumerate(pool.make(count)):
            samples.append(one_pod(node, ex, flows, rows, i, pod))
            time.sleep(GAP)  # why: let the controller go idle, as between real pod starts
    return report(samples)


def report(samples: list[dict[str, float]]) -> dict[str, Any]:
    """p50/p99/max of each latency and the 50 ms target."""
    rows: list[dict[str, Any]] = []
    for key, label in (
        ("ovsdb_to_flows", "OVSDB row visible -> flows installed"),
        ("add_to_flows", "CNI ADD returned -> flows installed"),
        ("add_to_ovsdb", "CNI ADD returned -> OVSDB row visible (reference)"),
    ):
        values = [s[key] for s in samples]
        rows.append(
            {
                "interval": label,
                "n": len(values),
                "p50_ms": round(percentile(values, 50), 2),
                "p99_ms": round(percentile(values, 99), 2),
                "max_ms": round(max(values), 2),
            }
        )
    p99 = rows[0]["p99_ms"]
    return {
        "name": "learn",
        "title": "Learn latency (pod's OVSDB row / CNI ADD -> its flows in br-int)",
        "params": {"pods": len(samples), "gap_between_pods_s": GAP, "poll_interval_ms": 1},
        "tables": [{"title": "Latency (ms)", "columns": list(rows[0].keys()), "rows": rows}],
        "targets": [target("flows within 50 ms of the CNI's commit (p99)", p99, LIMIT_MS)],
    }
