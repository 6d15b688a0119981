"""os-ken conversion: every built flow serializes, and OVS decodes it as rendered.

With ovs-ofctl on PATH, the serialized bytes are decoded by ``ovs-ofctl
ofp-parse`` and compared with ``render(names=False)``, and the rendered text
is fed to ``ovs-ofctl parse-flows``: the renderer and the os-ken encoder must
agree with OVS and with each other.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from os_ken.ofproto import ofproto_protocol, ofproto_v1_3

from flows import ofmsg
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
