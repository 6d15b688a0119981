"""The network-ready benchmark's record (pure): per-pod samples -> tables, ratio, target.

Latency = first TCP reply - CNI ADD return, per path; a pod never ready within
the prober's deadline counts as the deadline. Two OVSDB references (when the
pod's row and its ofport became visible) use the same columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.common import percentile, ratio, target
from bench.netready_watch import DEADLINE_S, Probe

LIMIT_MS = 100.0
TARGET = "network-ready on another node within 100 ms of the ADD's return (p99)"
SOURCE = "node1"


@dataclass(frozen=True)
class Sample:
    """One new pod: when its ADD returned, when its row was seen, what each prober saw."""

    pod: str
    node: str
    index: int  # the pod's number on its node (0 = the first new pod there)
    add_return: float
    row_seen: float
    ofport_seen: float | None
    remote: Probe | None
    local: Probe | None
    pod_seen: float | None = None  # sluice-controller learnt the pod (its log)
    flows_installed: float | None = None  # the barrier after its flows (its log)


def path_row(label: str, add_returns_: list[float], probes: list[Probe | None]) -> dict[str, Any]:
    """p50/p99/max of reply - ADD return (ms); a failed or missing probe counts as the deadline."""
    ms = [
        (p.wallclock - t) * 1000.0 if p is not None and p.ok else DEADLINE_S * 1000.0
        for t, p in zip(add_returns_, probes, strict=True)
    ]
    ready = [(p, m) for p, m in zip(probes, ms, strict=True) if p is not None and p.ok]
    return {
        "path": label,
        "n": len(ms),
        "failures": len(ms) - len(ready),
        "p50_ms": round(percentile(ms, 50), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2) if ms else None,
        "ready_before_add_returned": sum(1 for _, m in ready if m < 0),
        "ready_at_first_probe": sum(1 for p, _ in ready if p.attempts == 1),
    }


def path_rows(samples: list[Sample]) -> dict[str, dict[str, Any]]:
    """The table's rows: both probed paths and the two OVSDB references."""
    adds = [s.add_return for s in samples]
    rows = {
        "remote": path_row(f"{SOURCE} (other node, VXLAN)", adds, [s.remote for s in samples]),
        "local": path_row("same node (reference)", adds, [s.local for s in samples]),
        "feed": path_row(
            "OVSDB row seen, IP fed to the probers (reference)",
            adds,
            [Probe(True, s.row_seen, 0) for s in samples],
        ),
        "ofport": path_row(
            "ofport set by ovs-vswitchd (reference)",
            adds,
            [_at(s.ofport_seen) for s in samples],
        ),
        "learnt": path_row(
            "sluice-controller learnt the pod (reference)", adds, [_at(s.pod_seen) for s in samples]
        ),
        "flows": path_row(
            "its flows installed, barrier answered (reference)",
            adds,
            [_at(s.flows_installed) for s in samples],
        ),
    }
    for key in ("feed", "ofport", "learnt", "flows"):
        rows[key]["ready_at_first_probe"] = None  # no probing on these rows
    return rows


def _at(wallclock: float | None) -> Probe | None:
    """A reference time as a Probe (None: not seen, counted as the deadline)."""
    return None if wallclock is None else Probe(True, wallclock, 0)


def _gap_ms(pairs: list[tuple[float | None, float | None]]) -> dict[str, Any]:
    """p50/p99 of ``b - a`` (ms) over the pairs where both are known."""
    ms = [(b - a) * 1000.0 for a, b in pairs if a is not None and b is not None]
    return {"n": len(ms), "p50": round(percentile(ms, 50), 2), "p99": round(percentile(ms, 99), 2)}


def stages(samples: list[Sample]) -> dict[str, Any]:
    """Where a pod's time goes: the controller's share and what follows it."""
    remote = [s.remote.wallclock if s.remote and s.remote.ok else None for s in samples]
    return {
        "controller_learnt_to_flows_installed_ms": _gap_ms(
            [(s.pod_seen, s.flows_installed) for s in samples]
        ),
        "row_seen_to_controller_learnt_ms": _gap_ms([(s.row_seen, s.pod_seen) for s in samples]),
        "flows_installed_to_other_node_reply_ms": _gap_ms(
            [(s.flows_installed, r) for s, r in zip(samples, remote, strict=True)]
        ),
        "ofport_set_to_other_node_reply_ms": _gap_ms(
            [(s.ofport_seen, r) for s, r in zip(samples, remote, strict=True)]
        ),
    }


def by_index(samples: list[Sample], step: int) -> list[dict[str, Any]]:
    """Medians per group of ``step`` pods by their number on the node (the trend with size)."""
    out = []
    for low in range(0, max((s.index for s in samples), default=-1) + 1, step):
        part = [s for s in samples if low <= s.index < low + step]
        if part:
            rows = path_rows(part)
            out.append(
                {
                    "pod_numbers": f"{low}-{low + step - 1}",
                    "n": len(part),
                    "ofport_p50_ms": rows["ofport"]["p50_ms"],
                    "other_node_p50_ms": rows["remote"]["p50_ms"],
                    "same_node_p50_ms": rows["local"]["p50_ms"],
                    "other_node_max_ms": rows["remote"]["max_ms"],
                }
            )
    return out


def report(
    samples: list[Sample], params: dict[str, Any], errors: dict[str, Any], step: int
) -> dict[str, Any]:
    """The result record: both paths, the references, the trend, the ratio, the target."""
    rows = path_rows(samples)
    remote, local = rows["remote"], rows["local"]
    trend = by_index(samples, step)
    return {
        "name": "netready",
        "title": "Pod network-ready latency (CNI ADD returned -> TCP reply from another node)",
        "params": params,
        "tables": [
            {
                "title": "CNI ADD returned -> first TCP reply (ms)",
                "columns": list(remote.keys()),
                "rows": list(rows.values()),
            },
            {
                "title": "The same from ADD return (ms, median), by the pod's number on its node",
                "columns": list(trend[0].keys()) if trend else [],
                "rows": trend,
            },
        ],
        "breakdown": {
            "stages": stages(samples),
            "ratio_other_node_to_same_node": {
                "p50": ratio(remote["p50_ms"], local["p50_ms"]),
                "p99": ratio(remote["p99_ms"], local["p99_ms"]),
            },
        },
        "errors": errors,
        "targets": [target(TARGET, remote["p99_ms"], LIMIT_MS)],
    }
