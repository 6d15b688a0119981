"""Flow IR normalization and validation."""

from __future__ import annotations

import pytest

from flows import fields
from flows.ir import Conjunction, Ct, Flow, Load, Match, Move, Output, SetField
from flows.pipeline import CONNTRACK_STATE, CONNTRACK_ZONE, EGRESS_RULE, L3_FORWARDING, SPOOF_GUARD
from flows.recipes import IP


def test_match_order_and_spelling_do_not_change_identity():
    a = Flow(
        SPOOF_GUARD, 200, (Match("ip_src", "10.0.0.1"), Match("eth_src", "AA:00:00:00:00:01"), IP)
    )
    b = Flow(SPOOF_GUARD, 200, (IP, Match("eth_src", "aa:00:00:00:00:01"), ("ip_src", "10.0.0.1")))
    assert a == b and hash(a) == hash(b)
    assert [m.field for m in a.match] == ["eth_src", "eth_type", "ip_src"]


def test_prefixes_become_value_and_mask_and_full_masks_disappear():
    flow = Flow(
        L3_FORWARDING, 200, (IP, Match("ip_dst", "10.244.2.9/24"), Match("reg0", 3, 0xFFFFFFFF))
    )
    assert flow.matches()["ip_dst"] == Match("ip_dst", "10.244.2.0", "255.255.255.0")
    assert flow.matches()["reg0"] == Match("reg0", 3, None)


@pytest.mark.parametrize(
    ("match", "error"),
    [
        ((Match("ip_dst", "10.0.0.1"),), "needs eth_type"),
        ((Match("eth_type", 0x0806), Match("ip_src", "10.0.0.1")), "needs eth_type"),
        ((IP, Match("tcp_dst", 80)), "needs ip_proto"),
        ((Match("eth_src", "not-a-mac"),), "not a MAC"),
        ((Match("nope", 1),), "unknown OpenFlow field"),
        ((Match("in_port", 1), Match("in_port", 2)), "given twice"),
        ((Match("reg0", 1 << 32),), "out of range"),
    ],
)
def test_invalid_matches_are_rejected(match, error):
    with pytest.raises(ValueError, match=error):
        Flow(SPOOF_GUARD, 200, match)


def test_invalid_actions_are_rejected():
    with pytest.raises(ValueError):
        Output(0)
    with pytest.raises(ValueError):
        Load("reg0", 0, 3, 16)
    with pytest.raises(ValueError):
        Move("eth_src", "arp_spa")
    with pytest.raises(ValueError):
        SetField("ip_dst", "10.0.0.0/24")
    with pytest.raises(ValueError, match="writing arp_op needs eth_type"):
        Flow(EGRESS_RULE, 200, (IP,), (SetField("arp_op", 2),))
    with pytest.raises(ValueError, match="ct"):
        Flow(CONNTRACK_ZONE, 200, (), (Ct(1, table=CONNTRACK_STATE),))
    with pytest.raises(ValueError, match="conjunction"):
        Flow(EGRESS_RULE, 200, (), (Conjunction(1, 1, 2), Output(3)))


def test_flows_are_hashable_and_usable_in_sets():
    load = fields.FROM_POD.load()
    flows = {Flow(SPOOF_GUARD, 1, (), (load,)), Flow(SPOOF_GUARD, 1, (), (load,))}
    assert len(flows) == 1


def test_marks_know_their_bits():
    assert fields.FROM_GATEWAY.match() == Match("reg0", 2, 0xF)
    assert fields.OUTPUT_PORT_SET.match() == Match("reg0", 0x100, 0x100)
    assert fields.TO_POD.load() == Load("reg0", 4, 7, 3)
    assert fields.TARGET_OFPORT.spec() == "reg1[0..31]"
    assert fields.CT_FROM_GATEWAY.field.spec() == "ct_mark[0]"


def test_flows_are_compact_and_pickle_without_their_cached_hash():
    import pickle

    from flows import cookies

    pod_cookie = cookies.make(1, cookies.Category.POD, 40000)
    cookie = cookies.with_table(pod_cookie, L3_FORWARDING.table_id)
    a = Flow(L3_FORWARDING, 200, (IP, Match("ip_dst", "10.244.2.9")), (Output(3),), cookie)
    b = Flow(L3_FORWARDING, 200, (IP, Match("ip_dst", "10.244.2.8")), (Output(3),), cookie)
    assert not hasattr(a, "__dict__")  # slots: no per-flow attribute dict
    assert a.cookie is cookie and b.cookie is cookie  # a table-tagged cookie is shared as is
    hash(a)
    copy = pickle.loads(pickle.dumps(a))
    assert copy == a and copy._hash is None and hash(copy) == hash(a)
    assert a.oxm_match == copy.oxm_match
