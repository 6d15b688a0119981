"""os-ken conversion: every built flow serializes, and OVS decodes it as rendered.

With ovs-ofctl on PATH, the serialized bytes are decoded by ``ovs-ofctl
ofp-parse`` and compared with ``render(names=False)``, and the rendered text
is fed to ``ovs-ofctl parse-flows``: the renderer and the os-ken encoder must
agree with OVS and with each other.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from os_ken.ofproto import ofproto_protocol, ofproto_v1_3

from flows import cookies, ofmsg
from flows.desired import desired_flows
from flows.diff import Delta
from flows.fields import CT_ZONE
from flows.ir import Conjunction, Controller, Ct, Flow, Match, Output
from flows.pipeline import EGRESS_RULE, SERVICE_LB
from flows.recipes import IP
from flows.render import render, render_actions, render_match
from tests.unit.flows.sample import NODE, POD_A, POD_B, REMOTE, ROUTED_NODE, all_flows

OFCTL = shutil.which("ovs-ofctl")
needs_ofctl = pytest.mark.skipif(OFCTL is None, reason="ovs-ofctl not installed")

# Flows the pipeline does not build yet, to cover every action type.
EXTRA = [
    Flow(EGRESS_RULE, 150, (IP, Match("ip_src", "10.244.1.2")), (Conjunction(7, 1, 2),)),
    Flow(
        EGRESS_RULE,
        150,
        (IP, Match("conj_id", 7)),
        (Controller(),),
        idle_timeout=10,
        hard_timeout=20,
    ),
    Flow(
        SERVICE_LB,
        150,
        (IP, Match("ip_proto", 6), Match("tcp_dst", 80)),
        (Ct(CT_ZONE, commit=True, nat=True), Output(5)),
    ),
]


def every_flow() -> list[Flow]:
    overlay = desired_flows(replace(NODE, vni=5001), [POD_A, POD_B], [REMOTE])
    routed = desired_flows(ROUTED_NODE, [POD_A], [REMOTE])
    return sorted(set(all_flows(overlay)) | set(all_flows(routed)) | set(EXTRA), key=render)


@pytest.fixture(scope="module")
def dp():
    return ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION)


def serialize(msg) -> bytes:
    msg.serialize()
    return bytes(msg.buf)


def test_every_flow_serializes_for_add_modify_and_delete(dp):
    for flow in every_flow():
        for build in (ofmsg.add_flow, ofmsg.modify_flow, ofmsg.delete_flow):
            msg = build(dp, flow)
            assert len(serialize(msg)) >= 56
            assert (msg.table_id, msg.priority, msg.cookie) == (
                flow.table.table_id,
                flow.priority,
                flow.cookie,
            )


def test_delete_round_selects_the_round_bits_in_all_tables(dp):
    msg = ofmsg.delete_round(dp, 3)
    serialize(msg)
    assert (msg.cookie, msg.cookie_mask) == (3 << 48, 0xFFFF << 48)
    assert (msg.table_id, msg.command) == (dp.ofproto.OFPTT_ALL, dp.ofproto.OFPFC_DELETE)


def test_delta_messages_are_ordered_deletes_adds_modifies(dp):
    a, b, c = EXTRA
    msgs = ofmsg.delta_msgs(dp, Delta(adds=(a,), modifies=(b,), deletes=(c,)))
    ofp = dp.ofproto
    assert [m.command for m in msgs] == [
        ofp.OFPFC_DELETE_STRICT,
        ofp.OFPFC_ADD,
        ofp.OFPFC_MODIFY_STRICT,
    ]
    assert msgs[0].instructions == []


def expected_ofp_parse(flow: Flow) -> str:
    """How ovs-ofctl ofp-parse prints an OFPFC_ADD of ``flow``."""
    text = "ADD "
    if flow.table.table_id:
        text += f"table:{flow.table.table_id} "
    text += ",".join([f"priority={flow.priority}", *render_match(flow.match)])
    if flow.cookie:
        text += f" cookie:{flow.cookie:#x}"
    if flow.idle_timeout:
        text += f" idle:{flow.idle_timeout}"
    if flow.hard_timeout:
        text += f" hard:{flow.hard_timeout}"
    return f"{text} actions={render_actions(flow.actions, names=False)}"


@needs_ofctl
def test_ovs_decodes_the_os_ken_bytes_exactly_as_rendered(dp, tmp_path: Path):
    flows = every_flow()
    blob = tmp_path / "flows.of"
    blob.write_bytes(b"".join(serialize(ofmsg.add_flow(dp, f)) for f in flows))
    out = subprocess.run(
        [OFCTL, "ofp-parse", str(blob)], capture_output=True, text=True, check=True
    )
    decoded = [line.split("): ", 1)[1] for line in out.stdout.splitlines()]
    assert decoded == [expected_ofp_parse(f) for f in flows]
    assert "error" not in out.stderr.lower()


@needs_ofctl
def test_ovs_ofctl_accepts_every_rendered_flow(tmp_path: Path):
    flows = every_flow()
    text = tmp_path / "flows.txt"
    text.write_text("".join(render(f, names=False) + "\n" for f in flows))
    cmd = [OFCTL, "-O", "OpenFlow13", "parse-flows", str(text)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert out.stdout.count("OFPT_FLOW_MOD") == len(flows)


def add_flow_parts(dp, flow: Flow) -> tuple[bytes, bytes]:
    """Return (OXM TLVs of the match, instructions) of ``add_flow``'s bytes."""
    data = serialize(ofmsg.add_flow(dp, flow))
    match_at = 48  # ofp_header + ofp_flow_mod fields before ofp_match
    (match_len,) = struct.unpack_from("!H", data, match_at + 2)
    return data[match_at + 4 : match_at + match_len], data[match_at + (match_len + 7) // 8 * 8 :]


def test_recookie_is_a_nicira_flow_mod_with_the_old_cookie_as_filter(dp):
    flow = next(f for f in every_flow() if f.table.table_id == 8 and f.cookie and f.match)
    old = cookies.with_table(cookies.make(1, cookies.category_of(flow.cookie), 7), 8)
    data = serialize(ofmsg.recookie_flow(dp, flow, old))
    version, msg_type, length, _xid, vendor, subtype = struct.unpack_from("!BBHIII", data)
    assert (version, msg_type, length) == (4, dp.ofproto.OFPT_EXPERIMENTER, len(data))
    assert (vendor, subtype) == (0x2320, 13)
    fields = struct.unpack_from("!QHHHHIHHH6x", data, 16)
    command = (flow.table.table_id << 8) | dp.ofproto.OFPFC_MODIFY_STRICT
    tlvs, instructions = add_flow_parts(dp, flow)
    cookie_tlv = struct.pack("!IQQ", 0x0001_3D10, old, 2**64 - 1)  # NXM_NX_COOKIE_W
    assert ofmsg.NXM_NX_COOKIE_W == 0x0001_3D10
    assert fields == (
        flow.cookie,
        command,
        flow.idle_timeout,
        flow.hard_timeout,
        flow.priority,
        0xFFFFFFFF,  # no buffer
        0xFFFF,  # no out_port filter
        0,
        len(tlvs) + len(cookie_tlv),
    )
    match_end = 48 + len(tlvs) + len(cookie_tlv)
    assert data[48:match_end] == tlvs + cookie_tlv
    padded = 48 + (match_end - 48 + 7) // 8 * 8
    assert data[match_end:padded] == bytes(padded - match_end)
    assert data[padded:] == instructions and instructions


def test_recookie_of_a_drop_flow_has_no_instructions(dp):
    drop = next(f for f in every_flow() if not f.actions)
    data = serialize(ofmsg.recookie_flow(dp, drop, 1 << 48))
    (match_len,) = struct.unpack_from("!H", data, 40)  # nx_flow_mod.match_len
    assert len(data) == 48 + (match_len + 7) // 8 * 8


@pytest.mark.parametrize("old", [-1, 2**64])
def test_recookie_rejects_an_impossible_old_cookie(dp, old):
    with pytest.raises(ValueError):
        ofmsg.recookie_flow(dp, EXTRA[0], old)


def expected_recookie_parse(flow: Flow, old: int) -> str:
    """How ovs-ofctl ofp-parse prints ``recookie_flow(dp, flow, old)``."""
    text = "MOD_STRICT "
    if flow.table.table_id:
        text += f"table:{flow.table.table_id} "
    text += ",".join([f"priority={flow.priority}", *render_match(flow.match)])
    if flow.cookie:
        text += f" cookie:{flow.cookie:#x}"
    text += f" cookie:{old:#x}/0xffffffffffffffff"
    if flow.idle_timeout:
        text += f" idle:{flow.idle_timeout}"
    if flow.hard_timeout:
        text += f" hard:{flow.hard_timeout}"
    return f"{text} actions={render_actions(flow.actions, names=False)}"


@needs_ofctl
def test_ovs_decodes_every_recookie_as_a_strict_modify_in_the_flows_table(dp, tmp_path: Path):
    flows = every_flow()
    old = [cookies.with_table(f.cookie ^ (3 << 48), f.table.table_id) for f in flows]
    blob = tmp_path / "recookie.of"
    blob.write_bytes(
        b"".join(serialize(ofmsg.recookie_flow(dp, f, o)) for f, o in zip(flows, old, strict=True))
    )
    out = subprocess.run(
        [OFCTL, "ofp-parse", str(blob)], capture_output=True, text=True, check=True
    )
    lines = out.stdout.splitlines()
    assert all(line.startswith("NXT_FLOW_MOD (OF1.3) ") for line in lines)
    decoded = [line.split("): ", 1)[1] for line in lines]
    assert decoded == [expected_recookie_parse(f, o) for f, o in zip(flows, old, strict=True)]
