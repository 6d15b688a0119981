"""Smoke tests: every benchmark runs at its ``--quick`` size and returns a well-formed record.

They need root, network namespaces, Open vSwitch, iperf3 and Debian's CNI
plugins, so they are ``integration`` tests and skip cleanly elsewhere. They
check the structure of the results, never the timings.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench import __main__ as bench_main
from bench import apiserver, cni_latency, datapath, flowprog, learn
from sandbox.ovs import binaries_missing

pytestmark = pytest.mark.integration
TOOLS = ("ip", "ethtool", "iperf3", "stdbuf", "ping")


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    missing = binaries_missing()
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing += [t for t in TOOLS if shutil.which(t, path=path) is None]
    missing += [p for p in ("bridge", "host-local") if not Path("/usr/lib/cni", p).exists()]
    return f"missing: {', '.join(missing)}" if missing else None


@pytest.fixture(autouse=True)
def _requirements() -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)


def _slb_namespaces() -> set[str]:
    return (
        {p.name for p in Path("/run/netns").glob("slb-*")} if Path("/run/netns").exists() else set()
    )


@pytest.fixture
def no_leaks() -> Any:
    """Fail if a benchmark leaves a ``slb-*`` namespace behind."""
    before = _slb_namespaces()
    yield
    assert _slb_namespaces() - before == set()


def check_record(res: dict[str, Any], name: str) -> None:
    """The common shape of a benchmark's result record."""
    assert res["name"] == name and "error" not in res
    assert isinstance(res["params"], dict)
    for table in res["tables"]:
        assert table["rows"], table["title"]
        for row in table["rows"]:
            assert set(table["columns"]) <= set(row)
    for t in res["targets"]:
        assert set(t) == {"target", "limit", "measured", "met"}
        assert isinstance(t["met"], bool)
    json.dumps(res)


def numbers(rows: list[dict[str, Any]], key: str) -> list[float]:
    """The values of ``key`` in ``rows``, checked to be finite numbers."""
    values = [row[key] for row in rows]
    assert all(isinstance(v, int | float) and math.isfinite(v) for v in values), values
    return values


def test_cni_quick(tmp_path: Path, no_leaks: None) -> None:
    res = cni_latency.run(tmp_path, quick=True)
    check_record(res, "cni")
    rows = res["tables"][0]["rows"]
    assert {(r["workload"], r["command"], r["plugin"]) for r in rows} == {
        (w, c, p)
        for w in ("sequential", "burst c=8")
        for c in ("ADD", "DEL")
        for p in ("bridge", "sluice")
    }
    # why not == 0: a failed call is a finding of the benchmark, not a broken benchmark
    assert all(0 <= r["failures"] <= r["n"] for r in rows)
    numbers(rows, "p50_ms")
    assert set(res["breakdown"]["exec_only_version_p50_ms"]) == {"bridge", "sluice"}
    assert set(res["breakdown"]["sluice_dels_spooled_by_the_shim"]) == {"seq", "burst"}


def test_flows_quick(tmp_path: Path, no_leaks: None) -> None:
    res = flowprog.run(tmp_path, quick=True)
    check_record(res, "flows")
    rows = res["tables"][0]["rows"]
    states = [label for label, _ in flowprog.states()]
    assert [(r["state"], r["variant"]) for r in rows] == [
        (s, v) for s in states for v in flowprog.VARIANTS
    ]
    assert all(r["identical_set"] is True for r in rows)
    assert all(r["installed_flows"] == r["flows"] > 0 for r in rows)
    numbers(rows, "p50_ms")


def test_datapath_quick(tmp_path: Path, no_leaks: None) -> None:
    res = datapath.run(tmp_path, quick=True)
    check_record(res, "datapath")
    rows = {r["setup"]: r for r in res["tables"][0]["rows"]}
    assert set(rows) == {"sluice", "sluice-tso", "bare-ovs-tso", "bare-ovs", "veth"}
    assert rows["sluice"]["tx_csum"] == "off" and rows["sluice-tso"]["tx_csum"] == "on"
    assert all(v > 0 for v in numbers(list(rows.values()), "gbps"))
    numbers(list(rows.values()), "rtt_p50_us")
    if apiserver.binaries_missing():
        assert res["params"]["cross_node"].startswith("skipped") and len(res["tables"]) == 1
        return
    cross = {(r["phase"], r["setup"]): r for r in res["tables"][1]["rows"]}
    assert set(cross) == {
        ("overlay", "sluice-vxlan"),
        ("overlay", "bare-vxlan"),
        ("overlay", "bare-wire-tso"),
        ("routed", "sluice-routing"),
        ("routed", "bare-wire-tso"),
    }
    vxlan, routing = cross["overlay", "sluice-vxlan"], cross["routed", "sluice-routing"]
    # why: the mode's TSO default reaches the pods (checksum offload) and the MTU is computed
    assert (vxlan["tso"], vxlan["tx_csum"], vxlan["pod_mtu"]) == (False, "off", 1450)
    assert (routing["tso"], routing["tx_csum"], routing["pod_mtu"]) == (True, "on", 1500)
    assert all(v > 0 for v in numbers(list(cross.values()), "gbps"))
    assert {t["target"] for t in res["targets"]} >= {
        "sluice-vxlan >= 90% of bare-vxlan",
        "sluice-routing >= 90% of bare-wire-tso",
    }


def test_learn_quick(tmp_path: Path, no_leaks: None) -> None:
    res = learn.run(tmp_path, quick=True)
    check_record(res, "learn")
    rows = res["tables"][0]["rows"]
    assert [r["n"] for r in rows] == [learn.sizes(True)] * 3
    numbers(rows, "p99_ms")


def test_main_writes_report(tmp_path: Path, no_leaks: None) -> None:
    rc = bench_main.main(["--quick", "--only", "learn", "--out-dir", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "benchmarks.json").read_text())
    assert doc["quick"] is True and [r["name"] for r in doc["results"]] == ["learn"]
    assert {"cpu", "cores", "kernel", "ovs", "python"} <= set(doc["machine"])
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## Targets" in text and "Learn latency" in text
