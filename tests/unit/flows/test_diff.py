"""Desired vs installed flows: adds, modifies, deletes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flows import cookies
from flows.cookies import Category
from flows.desired import desired_flows
from flows.diff import Delta, diff, diff_flows
from flows.ir import Flow, Match, Output
from flows.pipeline import CLASSIFIER, SPOOF_GUARD
from flows.pod import flows_for_pod
from flows.remote import flows_for_remote_node
from tests.unit.flows.sample import NODE, POD_A, POD_B, REMOTE, switch

TO_GUARD = (SPOOF_GUARD.goto(),)


def flow(port: int = 5, actions=TO_GUARD, cookie: int = 0) -> Flow:
    return Flow(CLASSIFIER, 200, (Match("in_port", port),), actions, cookie)


def test_equal_states_give_an_empty_delta():
    desired = desired_flows(NODE, [POD_A], [REMOTE])
    assert diff(desired, desired).empty


def test_add_modify_delete():
    delta = diff_flows({flow(1), flow(2, actions=())}, {flow(2), flow(3)})
    assert delta == Delta(adds=(flow(1),), modifies=(flow(2, actions=()),), deletes=(flow(3),))


def test_cookie_change_is_an_add_not_a_modify():
    delta = diff_flows({flow(1, cookie=2)}, {flow(1, cookie=1)})
    assert delta == Delta(adds=(flow(1, cookie=2),))


def test_timeout_change_is_an_add():
    new = replace(flow(1), idle_timeout=10)
    assert diff_flows({new}, {flow(1)}).adds == (new,)


def test_flow_moving_between_keys_is_left_alone():
    assert diff({"b": {flow(1)}}, {"a": {flow(1)}}).empty


def test_conflicting_desired_flows_are_rejected():
    with pytest.raises(ValueError, match="share identity"):
        diff({"a": {flow(1)}, "b": {flow(1, actions=(Output(3),))}}, {})


def test_removed_pod_deletes_exactly_its_flows():
    before = desired_flows(NODE, [POD_A, POD_B], [REMOTE])
    after = desired_flows(NODE, [POD_A], [REMOTE])
    delta = diff(after, before)
    assert set(delta.deletes) == set(flows_for_pod(POD_B, NODE))
    assert not delta.adds and not delta.modifies


def test_remote_node_changing_ip_is_one_modify():
    moved = replace(REMOTE, node_ip="192.168.10.99")
    delta = diff(
        {REMOTE.key: flows_for_remote_node(moved, NODE)},
        {REMOTE.key: flows_for_remote_node(REMOTE, NODE)},
    )
    assert delta == Delta(modifies=tuple(flows_for_remote_node(moved, NODE)))


def test_applying_a_delta_to_the_fake_table_reaches_the_desired_state():
    table = switch(pods=[POD_A, POD_B])
    desired = desired_flows(NODE, [POD_A], [replace(REMOTE, node_ip="192.168.10.99")])
    delta = diff(desired, {"installed": table.flows()})
    table.apply(delta)
    table.apply(delta)  # idempotent
    assert table.flows() == frozenset(f for flows in desired.values() for f in flows)


def test_new_round_replaces_every_cookie_and_old_round_delete_removes_nothing_else():
    table = switch()
    old = desired_flows(NODE, [POD_A, POD_B], [REMOTE], round_=1)
    new = desired_flows(NODE, [POD_A, POD_B], [REMOTE], round_=2)
    delta = diff(new, {"installed": table.flows()})
    assert len(delta.adds) == sum(len(f) for f in old.values()) and not delta.modifies
    table.apply(delta)
    table.delete_by_cookie(cookies.round_cookie(1), cookies.round_mask())
    assert {cookies.round_of(f.cookie) for f in table.flows()} == {2}
    assert table.flows() == frozenset(f for flows in new.values() for f in flows)
    assert {cookies.category_of(f.cookie) for f in table.flows()} == {
        Category.PIPELINE,
        Category.GATEWAY,
        Category.POD,
        Category.REMOTE_NODE,
    }


def test_unchanged_keys_still_guard_identities_a_changed_key_touches():
    kept = frozenset({flow(1)})
    # a changed key that used to hold the same flow must not delete it from the switch
    assert diff({"a": kept, "b": frozenset()}, {"a": kept, "b": frozenset({flow(1)})}).empty
    # a changed key wanting a different flow at an unchanged key's identity is a conflict
    other = frozenset({flow(1, actions=(Output(3),))})
    with pytest.raises(ValueError, match="share identity"):
        diff({"a": kept, "b": other}, {"a": kept, "b": frozenset()})
    # and an unchanged key's flow is not re-added when a changed key also wants it
    assert diff({"a": kept, "b": kept | {flow(2)}}, {"a": kept}) == Delta(adds=(flow(2),))
