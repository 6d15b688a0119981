"""Metrics: the series exist, update, stay on a private registry."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from controller.metrics import CONTENT_TYPE, Metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: Metrics) -> Samples:
    """Parse ``render()`` back into {(sample name, sorted labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }


def test_every_series_is_exposed_from_the_start() -> None:
    text = Metrics().render().decode()
    for name in [
        "sluice_flows",
        "sluice_flow_mod_seconds",
        "sluice_flow_mods_total",
        "sluice_reconciles_total",
        "sluice_cni_requests_total",
        "sluice_cni_request_seconds",
        "sluice_pods",
        "sluice_switch_connected",
    ]:
        assert f"# TYPE {name} " in text, name
    got = samples(Metrics())
    assert got[("sluice_flow_mods_total", (("op", "modify"),))] == 0
    assert got[("sluice_reconciles_total", (("reason", "resync"),))] == 0


def test_flows_per_table_replaces_the_previous_counts() -> None:
    m = Metrics()
    m.set_flows_per_table({"Classifier": 5, "SpoofGuard": 3})
    m.set_flows_per_table({"Classifier": 6})
    got = samples(m)
    assert got[("sluice_flows", (("table", "Classifier"),))] == 6
    assert ("sluice_flows", (("table", "SpoofGuard"),)) not in got


def test_flow_mod_histogram_spans_1ms_to_5s() -> None:
    m = Metrics()
    m.observe_flow_mod(0.0004)
    m.observe_flow_mod(0.3)
    m.observe_flow_mod(7.0)
    got = samples(m)
    assert got[("sluice_flow_mod_seconds_bucket", (("le", "0.001"),))] == 1
    assert got[("sluice_flow_mod_seconds_bucket", (("le", "5.0"),))] == 2
    assert got[("sluice_flow_mod_seconds_count", ())] == 3


def test_counters() -> None:
    m = Metrics()
    m.count_flow_mods(add=3, modify=1)
    m.count_flow_mods(delete=2)
    m.count_reconcile("startup")
    m.count_reconcile("reconnect")
    m.count_reconcile("reconnect")
    m.observe_cni_request("ADD", 0, 0.2)
    m.observe_cni_request("ADD", 11, 0.01)
    m.set_pods(4)
    m.set_switch_connected(True)
    got = samples(m)
    assert got[("sluice_flow_mods_total", (("op", "add"),))] == 3
    assert got[("sluice_flow_mods_total", (("op", "delete"),))] == 2
    assert got[("sluice_reconciles_total", (("reason", "reconnect"),))] == 2
    assert got[("sluice_cni_requests_total", (("code", "11"), ("command", "ADD")))] == 1
    assert got[("sluice_cni_request_seconds_count", (("command", "ADD"),))] == 2
    assert got[("sluice_pods", ())] == 4
    assert got[("sluice_switch_connected", ())] == 1
    m.set_switch_connected(False)
    assert samples(m)[("sluice_switch_connected", ())] == 0


def test_label_values_are_bounded() -> None:
    m = Metrics()
    with pytest.raises(ValueError, match="reconcile reason"):
        m.count_reconcile("because")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CNI command"):
        m.observe_cni_request("add", 0, 0.1)
    with pytest.raises(ValueError, match="modify"):
        m.count_flow_mods(modify=-1)


def test_instances_are_independent_and_global_registry_untouched() -> None:
    a, b = Metrics(), Metrics()
    a.set_pods(2)
    assert samples(b)[("sluice_pods", ())] == 0
    assert not [n for n in REGISTRY._names_to_collectors if n.startswith("sluice_")]


def test_content_type_is_text_format_0_0_4() -> None:
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
