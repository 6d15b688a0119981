"""full_sync against a dumped switch: own flows kept (recookie or modify), others added or deleted.

The dumped flows are os-ken ``OFPFlowStats`` whose matches were parsed from
the wire, as the switch reports them; the reconciler must recognise its own
flows among them by table, priority and match, whatever the cookie.
"""

from __future__ import annotations

from dataclasses import replace

from os_ken.ofproto import ofproto_protocol, ofproto_v1_3
from os_ken.ofproto import ofproto_v1_3_parser as parser

from bench import flowstate
from controller.metrics import Metrics
from controller.reconcile import Reconciler, all_keys, desired_for, policy_flows
from controller.switch import Switch
from flows import ofmsg
from flows.ir import Flow
from flows.policy import flows_for_policies
from flows.policy_model import PodMeta
from flows.render import render
from tests.unit.controller.wire_dp import Wire, WireDatapath

ROUND = 2
OFP = ofproto_v1_3


def in_round(cookie: int, round_: int) -> int:
    return (cookie & ~(0xFFFF << 48)) | (round_ << 48)


def reported(flow: Flow, cookie: int) -> parser.OFPFlowStats:
    """How the switch reports ``flow`` installed with ``cookie``."""
    buf = bytearray()
    ofmsg.to_match(ofproto_protocol.ProtocolDesc(OFP.OFP_VERSION), flow.match).serialize(buf, 0)
    match = parser.OFPMatch.parser(bytes(buf), 0)
    return parser.OFPFlowStats(
        table_id=flow.table.table_id, priority=flow.priority, cookie=cookie, match=match
    )


def without_xid(data: bytes) -> bytes:
    return data[:4] + bytes(4) + data[8:]


def run_full_sync(installed: list[parser.OFPFlowStats]) -> tuple[list[Flow], list[Wire]]:
    """A Reconciler's full_sync over a switch reporting ``installed``; (desired, sent)."""
    state = flowstate.state(3, 2)
    snap = state.snapshot()
    policy = policy_flows(snap, ROUND)
    desired = desired_for(snap, all_keys(snap, policy), ROUND, policy)
    switch, dp = Switch(), WireDatapath(dump=lambda: installed)
    dp.switch = switch
    switch.attach(dp)
    Reconciler(state, switch, Metrics(), ROUND, lambda _r, _s: None).full_sync()
    flows = sorted((f for fs in desired.values() for f in fs), key=render)
    return flows, dp.messages()


def test_full_sync_keeps_recognised_flows_and_replaces_the_rest() -> None:
    flows, _ = run_full_sync([])
    moved, same = flows[0], flows[1]
    gone, old, foreign = (replace(f, priority=f.priority + 1) for f in flows[2:5])
    assert not {gone, old, foreign} & set(flows)
    old_cookie = in_round(moved.cookie, 1)
    installed = [
        reported(moved, old_cookie),
        reported(same, same.cookie),
        reported(gone, gone.cookie),  # not desired, this round: deleted strictly
        reported(old, in_round(old.cookie, 1)),  # not desired, round 1: deleted with its round
        reported(foreign, 0),  # not desired, not Sluice's (cookie 0): left alone
    ]
    flows, sent = run_full_sync(installed)
    bundled = {without_xid(m.inner.data) for m in sent if m.inner is not None}
    expected = {without_xid(ofmsg.encode_recookie(moved, old_cookie))}
    expected.add(without_xid(ofmsg.encode_modify(same)))
    expected |= {without_xid(ofmsg.encode_add(f)) for f in flows if f not in (moved, same)}
    assert bundled == expected
    deletes = [m for m in sent if m.inner is None and m.msg_type == OFP.OFPT_FLOW_MOD]
    assert [(m.flow_mod_command, m.data[24]) for m in deletes] == [
        (OFP.OFPFC_DELETE, OFP.OFPTT_ALL),  # round 1 by cookie mask
        (OFP.OFPFC_DELETE_STRICT, gone.table.table_id),
    ]
    assert deletes[1].data[8:16] == bytes(8)  # strict delete by match, no cookie


def test_a_fresh_bridge_gets_every_flow_added_in_one_bundle() -> None:
    flows, sent = run_full_sync([])
    inner = [m.inner for m in sent if m.inner is not None]
    assert len(inner) == len(flows)
    assert all(m.msg_type == OFP.OFPT_FLOW_MOD and m.flow_mod_command == 0 for m in inner)
    assert sent[-1].msg_type == OFP.OFPT_BARRIER_REQUEST


def test_policy_flows_without_policies_skip_the_pods_and_match_the_full_compile() -> None:
    state = flowstate.state(3, 2)
    for pod in flowstate.pods(3):
        meta = PodMeta(pod.namespace, pod.name, {"app": "a"}, (pod.ips[0],), None)
        state.set_policy_input("k8s_pods", f"{pod.namespace}/{pod.name}", meta)
    snap = state.snapshot()
    assert snap.node is not None and not snap.policies
    ofports = {(p.namespace, p.name): p.ofport for p in snap.pods.values()}
    pods = [replace(m, ofport=ofports[(m.namespace, m.name)]) for m in snap.k8s_pods.values()]
    full = flows_for_policies((), pods, snap.namespaces.values(), snap.node, ROUND)
    assert full
    assert policy_flows(snap, ROUND) == full
