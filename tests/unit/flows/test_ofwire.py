"""The direct encoders of ``flows.ofmsg`` write exactly the bytes os-ken's builders write.

``encode_add/modify/delete/recookie/delta`` skip os-ken's parser objects for
speed; every message here is compared byte for byte with the serialized
os-ken message built by ``add_flow`` & co. for the same flow. The flow set
covers every action type (conjunctions, ct with commit/table/nat/exec, Nicira
loads, moves and output:reg, set_field of tunnel and ARP fields), masks,
IPv4 prefixes, tunnels and timeouts; the OXM encoder is also checked field by
field over the whole catalogue, exact and masked.
"""

from __future__ import annotations

import pytest
from os_ken.ofproto import ofproto_protocol, ofproto_v1_3
from os_ken.ofproto import ofproto_v1_3_parser as parser

from bench import flowpolicy
from flows import cookies, ofmsg, oxm
from flows.diff import Delta
from flows.fields import CT_ZONE
from flows.ir import (
    IN_PORT,
    LOCAL,
    Controller,
    Ct,
    DecTtl,
    Flow,
    Load,
    Match,
    Move,
    Output,
    OutputReg,
    SetField,
)
from flows.pipeline import CLASSIFIER, EGRESS_RULE, SERVICE_LB
from flows.recipes import IP
from tests.unit.flows.test_ofmsg import every_flow

ARP = Match("eth_type", oxm.ETH_TYPE_ARP)
COOKIE = cookies.make(3, cookies.Category.POD, 0x8001)

# Match fields and actions the pipeline's own flows do not use (yet).
EXTRA = [
    Flow(
        CLASSIFIER,
        300,
        (Match("tun_id", 0x1389), Match("tun_src", "192.0.2.7"), Match("tun_dst", "192.0.2.1")),
        (Move("tun_src", "reg15"),),
        cookie=COOKIE,
    ),
    Flow(
        CLASSIFIER,
        290,
        (Match("eth_dst", "01:00:00:00:00:00", "01:00:00:00:00:00"), Match("in_port", LOCAL)),
        (Output(IN_PORT), Output(LOCAL)),
        idle_timeout=30,
    ),
    Flow(
        CLASSIFIER,
        280,
        (IP, Match("ip_proto", 132), Match("sctp_src", 9), Match("sctp_dst", 3868)),
        (DecTtl(), OutputReg("reg1", 0, 15), Controller(128)),
        hard_timeout=5,
    ),
    Flow(
        CLASSIFIER,
        270,
        (IP, Match("nw_ttl", 1), Match("ct_zone", CT_ZONE), Match("ip_src", "0.0.0.0/0")),
        (Load("reg7", 31, 31, 1), Load("tun_id", 0, 63, 2**64 - 1), Output(7)),
    ),
    Flow(
        CLASSIFIER,
        260,
        (ARP, Match("arp_tha", "0a:00:00:00:00:09"), Match("arp_tpa", "10.0.0.0/31")),
        (SetField("arp_tha", "0a:00:00:00:00:0a"), SetField("arp_tpa", "10.0.0.1")),
    ),
    Flow(
        CLASSIFIER,
        250,
        (
            IP,
            Match("ip_proto", 17),
            Match("udp_src", 68),
            Match("ip_dst", "10.1.2.3/32"),
            Match("reg3", 0x10, 0x30),
            Match("ct_mark", 1, 1),
        ),
        (SetField("tun_id", 5001), SetField("tun_dst", "192.0.2.9"), SetField("ip_dst", "1.2.3.4")),
    ),
    Flow(
        SERVICE_LB,
        240,
        (IP, Match("ip_proto", 6), Match("tcp_src", 1024, 0xFC00)),
        (Ct(CT_ZONE, commit=True, exec_=(Load("ct_mark", 0, 0, 1),)), Output(3)),
    ),
    Flow(EGRESS_RULE, 0, (), ()),
]


def flow_set() -> list[Flow]:
    """Pipeline flows (overlay and routed), NetworkPolicy flows and ``EXTRA``."""
    policy = [f for fs in flowpolicy.policy_flows(12, 6).values() for f in fs]
    return every_flow() + sorted(set(policy) - set(every_flow()), key=repr) + EXTRA


FLOWS = flow_set()


@pytest.fixture(scope="module")
def dp():
    return ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION)


def wire(msg) -> bytes:
    msg.serialize()
    return bytes(msg.buf)


def test_the_flow_set_covers_every_action_type_and_masks():
    kinds = {type(a).__name__ for f in FLOWS for a in f.actions}
    assert kinds >= {"Conjunction", "Ct", "Load", "Move", "OutputReg", "SetField", "DecTtl"}
    assert kinds >= {"Output", "Controller", "Goto"}
    cts = [a for f in FLOWS for a in f.actions if isinstance(a, Ct)]
    assert any(c.exec_ for c in cts) and any(c.nat for c in cts) and any(c.table for c in cts)
    assert any(m.mask is not None and m.field == "ip_dst" for f in FLOWS for m in f.match)
    assert any(m.field == "conj_id" for f in FLOWS for m in f.match)


@pytest.mark.parametrize(
    ("fast", "reference"),
    [
        (ofmsg.encode_add, ofmsg.add_flow),
        (ofmsg.encode_modify, ofmsg.modify_flow),
        (ofmsg.encode_delete, ofmsg.delete_flow),
    ],
    ids=["add", "modify", "delete"],
)
def test_flow_mods_are_byte_identical_to_os_ken(dp, fast, reference):
    for flow in FLOWS:
        assert fast(flow) == wire(reference(dp, flow)), flow


def test_recookie_is_byte_identical_to_os_ken(dp):
    for flow in FLOWS:
        old = cookies.with_table(flow.cookie ^ (5 << 48), flow.table.table_id)
        assert ofmsg.encode_recookie(flow, old) == wire(ofmsg.recookie_flow(dp, flow, old)), flow


@pytest.mark.parametrize("old", [-1, 2**64])
def test_recookie_rejects_an_impossible_old_cookie(old):
    with pytest.raises(ValueError):
        ofmsg.encode_recookie(FLOWS[0], old)


def test_delta_is_byte_identical_and_in_the_same_order(dp):
    delta = Delta(adds=tuple(FLOWS[:3]), modifies=tuple(FLOWS[3:5]), deletes=tuple(FLOWS[5:8]))
    assert list(ofmsg.encode_delta(delta)) == [wire(m) for m in ofmsg.delta_msgs(dp, delta)]


def test_instructions_are_byte_identical_to_os_ken(dp):
    for flow in FLOWS:
        buf = bytearray()
        for inst in ofmsg.to_instructions(dp, flow.actions):
            inst.serialize(buf, len(buf))
        assert ofmsg.encode_instructions(flow.actions) == bytes(buf), flow


def test_an_unknown_action_is_a_type_error():
    with pytest.raises(TypeError):
        ofmsg.encode_action(object())  # type: ignore[arg-type]


def sample_value(field: oxm.FieldInfo, ones: bool = False) -> oxm.FieldValue:
    number = (1 << field.bits) - 1 if ones else 0x0102030405060708 & ((1 << field.bits) - 1)
    return oxm.from_int(field.name, number)


@pytest.mark.parametrize("name", sorted(oxm.FIELDS))
def test_every_field_encodes_like_os_ken_exact_and_masked(name):
    field = oxm.FIELDS[name]
    value = sample_value(field)
    mask = oxm.from_int(name, ((1 << field.bits) - 1) ^ 1)  # all but the lowest bit
    masked_value = oxm.normalize(name, value, mask)[0]
    for given, items in (
        ({field.osken: value}, [(name, value, None)]),
        ({field.osken: (masked_value, mask)}, [(name, masked_value, mask)]),
    ):
        buf = bytearray()
        parser.OFPMatch(**given).serialize(buf, 0)
        length = int.from_bytes(buf[2:4], "big")
        assert oxm.encode_match(items) == bytes(buf[4:length])


def test_tlvs_follow_os_ken_order_whatever_the_ir_order():
    flow = EXTRA[0]  # NXM_1 and OpenFlow-basic fields: the IR prints them in another order
    buf = bytearray()
    ofmsg.to_match(ofproto_protocol.ProtocolDesc(4), flow.match).serialize(buf, 0)
    assert flow.oxm_match == bytes(buf[4 : int.from_bytes(buf[2:4], "big")])


def test_installed_match_reads_back_every_flows_match(dp):
    """What the switch reports (os-ken parses it) compares equal to the flow's own match."""
    for flow in FLOWS:
        buf = bytearray()
        ofmsg.to_match(dp, flow.match).serialize(buf, 0)
        assert ofmsg.installed_match(parser.OFPMatch.parser(bytes(buf), 0)) == flow.match


def test_installed_match_with_a_field_the_ir_lacks_equals_no_flow():
    foreign = parser.OFPMatch(in_port=1, vlan_vid=0x1005)
    key = ofmsg.installed_match(foreign)
    assert key not in {f.match for f in FLOWS}
    assert key != ofmsg.installed_match(parser.OFPMatch(in_port=1))
