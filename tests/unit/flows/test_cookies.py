"""Cookie layout helpers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flows import cookies
from flows.cookies import Category
from flows.ir import Flow
from flows.pipeline import L3_FORWARDING, SPOOF_GUARD


@pytest.mark.parametrize(
    ("round_", "category", "obj"),
    [
        (1, Category.POD, 32768),
        (0xFFFF, Category.REMOTE_NODE, 0xFFFFFFFF),
        (7, Category.PIPELINE, 0),
    ],
)
def test_cookie_round_trips(round_, category, obj):
    cookie = cookies.make(round_, category, obj)
    assert cookies.round_of(cookie) == round_
    assert cookies.category_of(cookie) is category
    assert cookies.object_of(cookie) == obj
    assert cookie & cookies.round_mask() == cookies.round_cookie(round_)


def test_layout_is_round_category_table_object():
    assert cookies.make(1, Category.POD, 0x8000) == 0x0001_03_00_00008000
    assert cookies.with_table(0x0001_03_00_00008000, 8) == 0x0001_03_08_00008000
    assert cookies.round_mask() == 0xFFFF_0000_0000_0000


def test_with_table_replaces_only_the_table_bits():
    cookie = cookies.make(0xFFFF, Category.REMOTE_NODE, 0xFFFFFFFF)
    stamped = cookies.with_table(cookies.with_table(cookie, 254), 3)
    assert cookies.table_of(stamped) == 3
    assert (cookies.round_of(stamped), cookies.object_of(stamped)) == (0xFFFF, 0xFFFFFFFF)
    assert cookies.category_of(stamped) is Category.REMOTE_NODE
    assert cookies.table_of(cookie) == 0


@pytest.mark.parametrize("table_id", [-1, 255, 256])
def test_with_table_rejects_non_table_ids(table_id):
    with pytest.raises(ValueError):
        cookies.with_table(1 << 48, table_id)


def test_flow_stamps_its_table_into_a_nonzero_cookie():
    cookie = cookies.make(2, Category.POD, 0x8000)
    flow = Flow(L3_FORWARDING, 200, (), (), cookie)
    assert flow.cookie == cookies.with_table(cookie, L3_FORWARDING.table_id)
    assert replace(flow, table=SPOOF_GUARD).cookie == cookies.with_table(cookie, 1)
    assert Flow(L3_FORWARDING, 200).cookie == 0  # cookie 0 (not Sluice's) stays 0


@pytest.mark.parametrize(("round_", "obj"), [(0, 1), (0x10000, 1), (1, 1 << 32), (1, -1)])
def test_out_of_range_parts_are_rejected(round_, obj):
    with pytest.raises(ValueError):
        cookies.make(round_, Category.POD, obj)


def test_foreign_cookie_has_no_category():
    with pytest.raises(ValueError):
        cookies.category_of(0)


def test_next_round_wraps_and_skips_zero():
    assert cookies.next_round(1) == 2
    assert cookies.next_round(0xFFFF) == 1


def test_node_object_id_is_stable_crc32():
    assert cookies.node_object_id("node-b") == 0xE1901C11
    assert cookies.node_object_id("node-b") != cookies.node_object_id("node-c")
