"""Conjunctive matches in the fake table behave as ovs-fields(7) describes them."""

from __future__ import annotations

import pytest

from flows.fake_table import AmbiguousLookup, FakeTable, ip_packet
from flows.ir import Conjunction, Flow, Match, Output
from flows.pipeline import CLASSIFIER
from flows.recipes import IP

PKT = ip_packet(5, "02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.1", "10.0.0.2")


def conj(priority: int, conj_id: int, clause: int, n: int, *match: Match) -> Flow:
    return Flow(CLASSIFIER, priority, (IP, *match), (Conjunction(conj_id, clause, n),))


def fires(priority: int, conj_id: int, port: int) -> Flow:
    return Flow(CLASSIFIER, priority, (IP, Match("conj_id", conj_id)), (Output(port),))


def src(ip: str) -> Match:
    return Match("ip_src", ip)


def dst(ip: str) -> Match:
    return Match("ip_dst", ip)


@pytest.fixture
def table() -> FakeTable:
    table = FakeTable()
    table.add_all(
        [
            conj(100, 7, 1, 2, src("10.0.0.1")),
            conj(100, 7, 1, 2, src("10.0.0.9")),
            conj(100, 7, 2, 2, dst("10.0.0.2")),
            fires(100, 7, 1),
            Flow(CLASSIFIER, 0, (), (Output(9),)),
        ]
    )
    return table


def test_a_conjunction_fires_when_every_clause_matches(table):
    assert table.lookup(PKT).ports == (1,)
    assert table.lookup(PKT | {"ip_src": "10.0.0.9"}).ports == (1,)


def test_a_missing_clause_falls_through_to_lower_priorities(table):
    assert table.lookup(PKT | {"ip_dst": "10.0.0.3"}).ports == (9,)
    assert table.lookup(PKT | {"ip_src": "10.0.0.3"}).ports == (9,)


def test_the_conj_id_is_not_carried_to_later_lookups(table):
    assert "conj_id" not in table.lookup(PKT).emitted[0].packet


def test_a_higher_priority_ordinary_flow_hides_the_conjunction(table):
    table.add(Flow(CLASSIFIER, 150, (IP,), (Output(3),)))
    assert table.lookup(PKT).ports == (3,)


def test_lower_priority_conjunctions_are_tried_after_incomplete_higher_ones(table):
    table.add_all([conj(200, 8, 1, 2, src("10.0.0.1")), conj(200, 8, 2, 2, dst("10.9.9.9"))])
    table.add(fires(200, 8, 4))
    assert table.lookup(PKT).ports == (1,)
    assert table.lookup(PKT | {"ip_dst": "10.9.9.9"}).ports == (4,)


def test_two_conjunctions_completing_at_one_priority_are_ambiguous(table):
    table.add_all([conj(100, 8, 1, 2, src("10.0.0.0/24")), conj(100, 8, 2, 2, dst("10.0.0.0/24"))])
    table.add(fires(100, 8, 4))
    with pytest.raises(AmbiguousLookup, match="overlap"):
        table.lookup(PKT)


def test_a_completed_conjunction_without_its_conj_id_flow_is_a_bug(table):
    table.delete_strict(fires(100, 7, 1))
    with pytest.raises(LookupError, match="conj_id=7"):
        table.lookup(PKT)


def test_ovs_rules_for_conjunction_actions_are_enforced_when_building():
    with pytest.raises(ValueError):
        Conjunction(1, 1, 1)  # OVS refuses fewer than two dimensions
    with pytest.raises(ValueError):
        Conjunction(0, 1, 2)  # packets carry conj_id 0 outside conjunctions
    with pytest.raises(ValueError):
        Conjunction(1, 3, 2)
