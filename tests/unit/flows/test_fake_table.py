"""The fake table's OpenFlow semantics, independent of the Sluice pipeline."""

from __future__ import annotations

import pytest

from flows.fake_table import AmbiguousLookup, FakeTable, ip_packet
from flows.ir import Flow, Match, Output
from flows.pipeline import CLASSIFIER, SPOOF_GUARD

PKT = ip_packet(5, "02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.1", "10.0.0.2")


def test_highest_priority_wins_and_masks_apply():
    table = FakeTable()
    table.add(Flow(CLASSIFIER, 10, (), (Output(1),)))
    table.add(
        Flow(
            CLASSIFIER, 20, (Match("eth_type", 0x800), Match("ip_dst", "10.0.0.0/24")), (Output(2),)
        )
    )
    assert table.lookup(PKT).ports == (2,)
    assert table.lookup(PKT | {"ip_dst": "10.0.1.2"}).ports == (1,)


def test_miss_without_flow_drops_and_output_to_in_port_is_skipped():
    table = FakeTable()
    assert table.lookup(PKT).dropped
    table.add(Flow(CLASSIFIER, 10, (), (Output(5),)))
    assert table.lookup(PKT).dropped


def test_modify_strict_keeps_cookie_and_never_adds():
    table = FakeTable()
    table.modify_strict(Flow(CLASSIFIER, 10, (), (Output(1),), cookie=9))
    assert not table.flows()
    table.add(Flow(CLASSIFIER, 10, (), (Output(1),), cookie=1))
    table.modify_strict(Flow(CLASSIFIER, 10, (), (Output(2),), cookie=9))
    assert table.flows() == {Flow(CLASSIFIER, 10, (), (Output(2),), cookie=1)}


def test_delete_strict_and_by_cookie_mask():
    table = FakeTable()
    a, b = Flow(CLASSIFIER, 10, (), (), cookie=0x10), Flow(SPOOF_GUARD, 10, (), (), cookie=0x20)
    table.add_all([a, b])
    table.delete_strict(Flow(CLASSIFIER, 11, (), ()))  # other priority: untouched
    assert table.flows() == {a, b}
    table.delete_by_cookie(0x20, 0xF0)
    assert table.flows() == {a}


def test_equal_priority_overlap_is_reported():
    table = FakeTable()
    table.add(Flow(CLASSIFIER, 10, (), (Output(1),)))
    table.add(Flow(CLASSIFIER, 10, (Match("in_port", 5),), (Output(2),)))
    with pytest.raises(AmbiguousLookup):
        table.lookup(PKT)
