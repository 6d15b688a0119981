"""The datapath benchmark's result record: tables, paired ratios and targets (pure).

Samples come per phase: ``{phase: {setup: [run, ...]}}``, where run ``i`` of
every set-up of a phase was taken in interleaved round ``i``. A ratio between
two set-ups is the median of their per-round ratios, so only set-ups of the
same phase are compared (they were measured seconds apart).
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.common import target

LIMIT = 0.9
SAME_NODE = "same-node"
SAME_NODE_REF = "bare-ovs-tso"
WIRE_REF = "bare-wire-tso"

Runs = list[dict[str, float]]
Samples = dict[str, dict[str, Runs]]
Facts = dict[str, dict[str, dict[str, Any]]]

SAME_NODE_COLUMNS = [
    "setup", "tx_csum", "gbps", "gbps_min", "gbps_max", "retransmits",
    "rtt_p50_us", "rtt_p99_us", "ratio_to_bare_tso",
]  # fmt: skip
CROSS_COLUMNS = [
    "phase", "setup", "mode", "tunnel", "wire_mtu", "pod_mtu", "tso", "tx_csum", "gbps",
    "gbps_min", "gbps_max", "retransmits", "rtt_p50_us", "rtt_p99_us", "reference",
    "ratio_to_ref", "ratio_to_bare_wire_tso",
]  # fmt: skip


def paired_ratio(runs: Runs, ref: Runs) -> float:
    """Median of the per-round throughput ratios ``runs[i] / ref[i]``."""
    return round(
        statistics.median(r["gbps"] / b["gbps"] for r, b in zip(runs, ref, strict=True)), 3
    )


def metrics(runs: Runs) -> dict[str, Any]:
    """Median over rounds of each metric, and the throughput's spread."""
    return {
        "gbps": round(statistics.median(r["gbps"] for r in runs), 2),
        "gbps_min": round(min(r["gbps"] for r in runs), 2),
        "gbps_max": round(max(r["gbps"] for r in runs), 2),
        "retransmits": int(statistics.median(r["retransmits"] for r in runs)),
        "rtt_p50_us": statistics.median(r["p50_us"] for r in runs),
        "rtt_p99_us": statistics.median(r["p99_us"] for r in runs),
    }


def ratio_to(phase: dict[str, Runs], name: str, ref: str | None) -> float | None:
    """Paired ratio of ``name`` to ``ref`` within one phase; None if ``ref`` is not there."""
    if ref is None or ref not in phase:
        return None
    return paired_ratio(phase[name], phase[ref])


def same_node_rows(phase: dict[str, Runs], facts: dict[str, dict[str, Any]]) -> list[Any]:
    """One row per same-node set-up, with its ratio to the bare bridge with TSO."""
    return [
        {
            "setup": name,
            "tx_csum": facts[name].get("tx_csum"),
            **metrics(runs),
            "ratio_to_bare_tso": ratio_to(phase, name, SAME_NODE_REF),
        }
        for name, runs in phase.items()
    ]


def cross_rows(samples: Samples, facts: Facts) -> list[dict[str, Any]]:
    """One row per set-up of every cross-node phase."""
    rows = []
    for phase_name, phase in samples.items():
        if phase_name == SAME_NODE:
            continue
        for name, runs in phase.items():
            f = facts[phase_name][name]
            rows.append(
                {
                    "phase": phase_name,
                    "setup": name,
                    **{k: f.get(k) for k in ("mode", "tunnel", "wire_mtu", "pod_mtu", "tso")},
                    "tx_csum": f.get("tx_csum"),
                    **metrics(runs),
                    "reference": f.get("reference"),
                    "ratio_to_ref": ratio_to(phase, name, f.get("reference")),
                    "ratio_to_bare_wire_tso": ratio_to(phase, name, WIRE_REF),
                }
            )
    return rows


def targets(same: list[dict[str, Any]], cross: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each Sluice set-up's throughput >= 90 % of its matching bare reference."""
    by = {r["setup"]: r for r in same}
    found = [
        target(f"{name} >= 90% of {SAME_NODE_REF}", by[name]["ratio_to_bare_tso"], LIMIT, True)
        for name in ("sluice-tso", "sluice")
        if name in by
    ]
    return found + [
        target(f"{r['setup']} >= 90% of {r['reference']}", r["ratio_to_ref"], LIMIT, True)
        for r in cross
        if r["reference"]
    ]


def fastest_overlay(cross: list[dict[str, Any]]) -> str:
    """Which Sluice overlay set-up had the highest median throughput, and against the wire."""
    overlay = [r for r in cross if r["mode"] == "overlay"]
    if not overlay:
        return "not measured"
    best = max(overlay, key=lambda r: r["gbps"])
    return (
        f"{best['setup']}: {best['gbps']} Gbit/s, {best['ratio_to_ref']} x {best['reference']}, "
        f"{best['ratio_to_bare_wire_tso']} x {WIRE_REF}"
    )


def table(title: str, columns: list[str], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One result table."""
    return {"title": title, "columns": columns, "rows": rows}


def report(samples: Samples, facts: Facts, params: dict[str, Any]) -> dict[str, Any]:
    """The result record: same-node and cross-node tables, ratios and targets."""
    same = same_node_rows(samples.get(SAME_NODE, {}), facts.get(SAME_NODE, {}))
    cross = cross_rows(samples, facts)
    by = {r["setup"]: r for r in same}
    derived: dict[str, Any] = {}
    if {"sluice", "bare-ovs"} <= set(by):
        phase = samples[SAME_NODE]
        derived["sluice_vs_bare_ovs_without_tso"] = paired_ratio(phase["sluice"], phase["bare-ovs"])
    if "sluice-tso" in by:
        derived["sluice_tso_vs_bare_ovs_tso"] = by["sluice-tso"]["ratio_to_bare_tso"]
    derived["fastest_overlay"] = fastest_overlay(cross)
    note = "medians of interleaved rounds; ratio = median of per-round ratios within a phase"
    tables = [
        table(
            f"Same node: iperf3 TCP (1 stream), 64-byte TCP ping-pong; {note}",
            SAME_NODE_COLUMNS,
            same,
        )
    ]
    if cross:
        tables.append(table(f"Across two nodes, per mode; {note}", CROSS_COLUMNS, cross))
    return {
        "name": "datapath",
        "title": "Datapath: pod to pod, same node and across nodes",
        "params": {**params, **derived},
        "tables": tables,
        "targets": targets(same, cross),
    }
