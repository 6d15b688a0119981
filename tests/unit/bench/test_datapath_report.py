"""bench/datapath_report.py: paired ratios, rows and targets from synthetic samples."""

from __future__ import annotations

from typing import Any

from bench import datapath_report as dr


def runs(*gbps: float) -> list[dict[str, float]]:
    """One run per round with the given throughputs and fixed latencies."""
    return [{"gbps": g, "retransmits": 1, "p50_us": 50.0, "p99_us": 90.0} for g in gbps]


SAMPLES: dr.Samples = {
    "same-node": {
        "sluice": runs(1.0, 1.1, 0.9),
        "sluice-tso": runs(9.0, 10.0, 8.0),
        "bare-ovs-tso": runs(10.0, 10.0, 10.0),
        "bare-ovs": runs(1.0, 1.0, 1.0),
        "veth": runs(20.0, 20.0, 20.0),
    },
    "overlay": {
        "sluice-vxlan": runs(0.9, 1.0, 0.8),
        "sluice-vxlan-mtu9000": runs(3.0, 3.0, 3.0),
        "bare-vxlan": runs(1.0, 1.0, 1.0),
        "bare-vxlan-mtu9000": runs(4.0, 4.0, 4.0),
        "bare-wire-tso": runs(6.0, 6.0, 6.0),
    },
}
FACTS: dr.Facts = {
    "same-node": {name: {"tx_csum": "on"} for name in SAMPLES["same-node"]},
    "overlay": {
        "sluice-vxlan": {"mode": "overlay", "tunnel": "vxlan", "reference": "bare-vxlan"},
        "sluice-vxlan-mtu9000": {"mode": "overlay", "reference": "bare-vxlan-mtu9000"},
        "bare-vxlan": {"tunnel": "vxlan"},
        "bare-vxlan-mtu9000": {"tunnel": "vxlan"},
        "bare-wire-tso": {"tso": True},
    },
}


def test_paired_ratio_is_the_median_of_per_round_ratios() -> None:
    # per-round ratios 0.5, 2.0, 1.0: their median is 1.0, the ratio of medians 0.5
    assert dr.paired_ratio(runs(1.0, 4.0, 2.0), runs(2.0, 2.0, 2.0)) == 1.0
    assert dr.paired_ratio(runs(1.0, 2.0, 9.0), runs(2.0, 4.0, 1.0)) == 0.5


def test_same_node_rows_compare_with_the_bare_bridge_with_tso() -> None:
    rows = {r["setup"]: r for r in dr.same_node_rows(SAMPLES["same-node"], FACTS["same-node"])}
    assert list(rows) == list(SAMPLES["same-node"])
    assert rows["sluice-tso"]["ratio_to_bare_tso"] == 0.9
    assert rows["bare-ovs-tso"]["ratio_to_bare_tso"] == 1.0
    assert rows["sluice"]["gbps"] == 1.0 and rows["sluice"]["gbps_max"] == 1.1


def test_cross_rows_pair_within_their_phase_only() -> None:
    rows = {r["setup"]: r for r in dr.cross_rows(SAMPLES, FACTS)}
    assert set(rows) == set(SAMPLES["overlay"])
    assert all(r["phase"] == "overlay" for r in rows.values())
    assert rows["sluice-vxlan"]["ratio_to_ref"] == 0.9
    assert rows["sluice-vxlan"]["ratio_to_bare_wire_tso"] == 0.15
    assert rows["sluice-vxlan-mtu9000"]["ratio_to_ref"] == 0.75
    assert rows["bare-vxlan"]["ratio_to_ref"] is None


def test_targets_name_each_sluice_setup_and_its_reference() -> None:
    record = dr.report(SAMPLES, FACTS, {"rounds": 3})
    got: dict[str, Any] = {t["target"]: t for t in record["targets"]}
    assert set(got) == {
        "sluice-tso >= 90% of bare-ovs-tso",
        "sluice >= 90% of bare-ovs-tso",
        "sluice-vxlan >= 90% of bare-vxlan",
        "sluice-vxlan-mtu9000 >= 90% of bare-vxlan-mtu9000",
    }
    assert got["sluice-vxlan >= 90% of bare-vxlan"]["met"] is True
    assert got["sluice-vxlan-mtu9000 >= 90% of bare-vxlan-mtu9000"]["met"] is False


def test_report_names_the_fastest_overlay_and_keeps_params() -> None:
    record = dr.report(SAMPLES, FACTS, {"rounds": 3})
    params = record["params"]
    assert params["rounds"] == 3
    assert params["fastest_overlay"].startswith("sluice-vxlan-mtu9000: 3.0 Gbit/s")
    assert params["sluice_vs_bare_ovs_without_tso"] == 1.0
    assert [len(t["rows"]) for t in record["tables"]] == [5, 5]


def test_report_without_cross_node_phases_has_one_table() -> None:
    samples = {"same-node": SAMPLES["same-node"]}
    record = dr.report(samples, {"same-node": FACTS["same-node"]}, {})
    assert len(record["tables"]) == 1
    assert record["params"]["fastest_overlay"] == "not measured"
