"""The pipeline contract: declaration order, allowed jumps, misses."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flows import pipeline
from flows.fields import CT_ZONE
from flows.ir import Ct, Flow, Match, Output
from flows.node import pipeline_flows
from flows.pipeline import (
    CLASSIFIER,
    CONNTRACK_STATE,
    CONNTRACK_ZONE,
    L3_FORWARDING,
    OUTPUT,
    SPOOF_GUARD,
    TABLES,
)
from flows.recipes import IP
from flows.table import Miss, PipelineError, Stage, TableSpec
from tests.unit.flows.sample import NODE

EXPECTED_ORDER = [
    "Classifier",
    "SpoofGuard",
    "ARPResponder",
    "ConntrackZone",
    "ConntrackState",
    "ServiceLB",
    "EgressRule",
    "EgressDefault",
    "L3Forwarding",
    "IngressRule",
    "IngressDefault",
    "ConntrackCommit",
    "Output",
]


def test_tables_are_numbered_in_declaration_order():
    assert [t.name for t in TABLES] == EXPECTED_ORDER
    assert [t.table_id for t in TABLES] == list(range(len(TABLES)))
    assert pipeline.table_names()[8] == "L3Forwarding"
    assert pipeline.by_name("Output") is OUTPUT


def test_stages_never_go_backwards():
    order = list(Stage)
    positions = [order.index(t.stage) for t in TABLES]
    assert positions == sorted(positions)


def test_allowed_goto_builds():
    flow = Flow(CLASSIFIER, 200, (Match("in_port", 5),), (SPOOF_GUARD.goto(),))
    assert flow.actions[-1].table is SPOOF_GUARD


def test_goto_to_a_table_not_in_next_tables_raises():
    with pytest.raises(PipelineError, match="L3Forwarding"):
        Flow(CLASSIFIER, 200, (), (L3_FORWARDING.goto(),))


def test_goto_backwards_raises():
    with pytest.raises(PipelineError):
        Flow(L3_FORWARDING, 200, (), (CLASSIFIER.goto(),))


def test_goto_to_an_undeclared_table_raises():
    impostor = TableSpec("Bogus", Stage.ROUTING, Miss.DROP, (), table_id=5)
    with pytest.raises(PipelineError, match="Bogus"):
        Flow(CLASSIFIER, 200, (), (impostor.goto(),))
    look_alike = replace(SPOOF_GUARD, next_names=("Output",))
    with pytest.raises(PipelineError, match="not declared"):
        Flow(look_alike, 200, (), ())


def test_ct_recirculation_target_is_checked_like_a_goto():
    Flow(CONNTRACK_ZONE, 200, (IP,), (Ct(CT_ZONE, table=CONNTRACK_STATE),))
    with pytest.raises(PipelineError):
        Flow(CONNTRACK_ZONE, 200, (IP,), (Ct(CT_ZONE, table=OUTPUT),))


def test_goto_must_be_last():
    with pytest.raises(PipelineError, match="last"):
        Flow(CLASSIFIER, 200, (), (SPOOF_GUARD.goto(), Output(3)))


def test_every_table_has_exactly_one_miss_flow_with_its_declared_behaviour():
    misses = {f.table.name: f for f in pipeline_flows(NODE) if f.priority == 0}
    assert list(misses) == EXPECTED_ORDER
    for table in TABLES:
        flow = misses[table.name]
        assert flow.match == ()
        if table.miss is Miss.DROP:
            assert flow.actions == ()
        else:
            assert flow.actions == (pipeline.next_table(table).goto(),)


@pytest.mark.parametrize(
    ("tables", "problem"),
    [
        ((TableSpec("lower", Stage.CLASSIFIER, Miss.DROP, (), 0),), "CamelCase"),
        ((TableSpec("A", Stage.CLASSIFIER, Miss.DROP, ("B",), 0),), "not declared after"),
        ((TableSpec("A", Stage.CLASSIFIER, Miss.NEXT, (), 0),), "NEXT miss"),
        ((TableSpec("A", Stage.CLASSIFIER, Miss.DROP, (), 1),), "position"),
    ],
)
def test_bad_declarations_are_rejected(tables, problem):
    with pytest.raises(PipelineError, match=problem):
        pipeline.check(tables)
