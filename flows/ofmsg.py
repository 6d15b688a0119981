"""Convert IR flows to os-ken OpenFlow 1.3 messages. Builds messages; never sends.

The only module of ``flows/`` that imports os-ken. ``dp`` is anything with
``.ofproto`` and ``.ofproto_parser`` for OpenFlow 1.3: a connected os-ken
``Datapath`` or ``os_ken.ofproto.ofproto_protocol.ProtocolDesc`` in tests.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from os_ken.ofproto import nicira_ext
from os_ken.ofproto.ofproto_common import NX_EXPERIMENTER_ID

from flows import cookies
from flows.diff import Delta
from flows.ir import (
    Action,
    Conjunction,
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
from flows.oxm import info
from flows.table import Goto

Datapath = Any  # os-ken Datapath / ProtocolDesc: untyped library objects
Msg = Any  # os-ken OFPFlowMod / OFPExperimenter
_NO_RECIRC = 0xFF  # NXActionCT recirc_table value meaning "no table="
_CT_COMMIT = 1  # NX_CT_F_COMMIT
# NXM_NX_COOKIE_W: class 0x0001 (NXM_1), field 30, has-mask, 16 bytes (value + mask)
NXM_NX_COOKIE_W: Final = (0x0001 << 16) | (30 << 9) | (1 << 8) | 16
_NX_FLOW_MOD: Final = struct.Struct(nicira_ext.NX_FLOW_MOD_PACK_STR)  # after the 16-byte header
_OFP_MATCH_HEADER: Final = struct.Struct("!HH")  # ofp_match type, length (excl. padding)
_ALL_ONES: Final = 2**64 - 1


def add_flow(dp: Datapath, flow: Flow) -> Msg:
    """Return an OFPFC_ADD for ``flow`` (replaces a flow with the same identity)."""
    return _flow_mod(dp, flow, dp.ofproto.OFPFC_ADD)


def modify_flow(dp: Datapath, flow: Flow) -> Msg:
    """Return an OFPFC_MODIFY_STRICT: new actions, same counters, cookie unchanged."""
    return _flow_mod(dp, flow, dp.ofproto.OFPFC_MODIFY_STRICT)


def recookie_flow(dp: Datapath, flow: Flow, old_cookie: int) -> Msg:
    """Return a Nicira NXT_FLOW_MOD that moves the installed flow to ``flow.cookie`` in place.

    For a flow that is installed with ``old_cookie`` and otherwise equals
    ``flow`` (table, priority, match): OVS rewrites its cookie and its
    instructions (sent as ``flow`` has them) and keeps the flow, so counters
    and ``duration`` continue. An OpenFlow 1.3 MODIFY cannot do this (OVS
    ignores its cookie) and an ADD resets ``duration``.

    Wire format: ``OFPT_EXPERIMENTER`` (experimenter 0x2320, subtype
    ``NXT_FLOW_MOD``) carrying ``nx_flow_mod`` {new cookie, command =
    ``table_id << 8 | MODIFY_STRICT``, timeouts and priority of ``flow``, no
    buffer, out_port none, match_len}, the flow's OXM match TLVs plus
    ``NXM_NX_COOKIE_W`` = ``old_cookie``/all ones (padded to 8 bytes), then
    the OpenFlow 1.3 instructions. OVS takes the table id from the command's
    high byte on OpenFlow 1.1+ connections (OVS ``ofputil_decode_flow_mod``,
    ``OFPUTIL_P_TID``); the table bits of Sluice cookies (``flows.cookies``)
    would keep (old cookie, priority, match) unique even across tables.
    MODIFY_STRICT with a cookie filter never adds: if no flow matches,
    nothing changes and no error is returned.

    Raises ``ValueError`` if ``old_cookie`` is not a 64-bit value.
    """
    if not 0 <= old_cookie <= _ALL_ONES:
        raise ValueError(f"old cookie {old_cookie:#x} out of range")
    ofp = dp.ofproto
    tlvs = _oxm_tlvs(dp, flow) + struct.pack("!IQQ", NXM_NX_COOKIE_W, old_cookie, _ALL_ONES)
    body = _NX_FLOW_MOD.pack(
        flow.cookie,
        # why: on an OpenFlow 1.1+ connection OVS reads the high byte of the
        # command as the table id (plain MODIFY_STRICT would mean table 0).
        (flow.table.table_id << 8) | ofp.OFPFC_MODIFY_STRICT,
        flow.idle_timeout,
        flow.hard_timeout,
        flow.priority,
        ofp.OFP_NO_BUFFER,
        0xFFFF,  # OFPP_NONE (OpenFlow 1.0 port numbers): no out_port filter
        0,  # flags
        len(tlvs),
    )
    body += tlvs + bytes(-len(tlvs) % 8)
    buf = bytearray()
    for inst in to_instructions(dp, flow.actions):
        inst.serialize(buf, len(buf))  # why: os-ken sets inst.len while serializing
    return dp.ofproto_parser.OFPExperimenter(
        dp, experimenter=NX_EXPERIMENTER_ID, exp_type=nicira_ext.NXT_FLOW_MOD, data=body + buf
    )


def _oxm_tlvs(dp: Datapath, flow: Flow) -> bytes:
    """Return the OXM TLVs of ``flow``'s match without the ofp_match header or padding."""
    buf = bytearray()
    to_match(dp, flow.match).serialize(buf, 0)
    _type, length = _OFP_MATCH_HEADER.unpack_from(buf)
    return bytes(buf[_OFP_MATCH_HEADER.size : length])


def delete_flow(dp: Datapath, flow: Flow) -> Msg:
    """Return an OFPFC_DELETE_STRICT for exactly ``flow``'s table, priority and match."""
    return _flow_mod(dp, flow, dp.ofproto.OFPFC_DELETE_STRICT, with_actions=False)


def delete_round(dp: Datapath, round_: int) -> Msg:
    """Return an OFPFC_DELETE of every flow, in every table, minted in ``round_``."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowMod(
        dp,
        cookie=cookies.round_cookie(round_),
        cookie_mask=cookies.round_mask(),
        table_id=ofp.OFPTT_ALL,
        command=ofp.OFPFC_DELETE,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(),
    )


def delta_msgs(dp: Datapath, delta: Delta) -> list[Msg]:
    """Return the messages that apply ``delta``: deletes, then adds, then modifies."""
    # why: deletes first so a flow that moved between objects is never removed
    # after its replacement was installed.
    msgs = [delete_flow(dp, f) for f in delta.deletes]
    msgs += [add_flow(dp, f) for f in delta.adds]
    return msgs + [modify_flow(dp, f) for f in delta.modifies]


def _flow_mod(dp: Datapath, flow: Flow, command: int, with_actions: bool = True) -> Msg:
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowMod(
        dp,
        cookie=flow.cookie,
        cookie_mask=0,
        table_id=flow.table.table_id,
        command=command,
        idle_timeout=flow.idle_timeout,
        hard_timeout=flow.hard_timeout,
        priority=flow.priority,
        buffer_id=ofp.OFP_NO_BUFFER,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        flags=0,
        match=to_match(dp, flow.match),
        instructions=to_instructions(dp, flow.actions) if with_actions else [],
    )


def to_match(dp: Datapath, match: tuple[Match, ...]) -> Any:
    """Return the ``OFPMatch`` for a normalized IR match."""
    kwargs: dict[str, Any] = {}
    for m in match:
        name = info(m.field).osken
        kwargs[name] = m.value if m.mask is None else (m.value, m.mask)
    return dp.ofproto_parser.OFPMatch(**kwargs)


def to_instructions(dp: Datapath, actions: tuple[Action, ...]) -> list[Any]:
    """Return apply-actions plus goto-table instructions; ``[]`` means drop."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    apply = [to_action(dp, a) for a in actions if not isinstance(a, Goto)]
    out = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, apply)] if apply else []
    out += [
        parser.OFPInstructionGotoTable(a.table.table_id) for a in actions if isinstance(a, Goto)
    ]
    return out


def to_action(dp: Datapath, action: Action) -> Any:  # noqa: C901 - flat dispatch
    """Return the os-ken action object for one IR action (not ``Goto``)."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    match action:
        case Output(port=port):
            return parser.OFPActionOutput(port, 0)
        case OutputReg(field=field, start=start, end=end):
            return parser.NXActionOutputReg(nicira_ext.ofs_nbits(start, end), field, 0)
        case SetField(field=field, value=value):
            return parser.OFPActionSetField(**{info(field).osken: value})
        case Load(field=field, start=start, end=end, value=value):
            return parser.NXActionRegLoad(nicira_ext.ofs_nbits(start, end), field, value)
        case Move(src=src, dst=dst):
            return parser.NXActionRegMove(info(src).osken, info(dst).osken, info(src).bits)
        case DecTtl():
            # why: OVS rejects the Nicira NXAST_DEC_TTL in OpenFlow 1.3 messages
            # (OFPBAC_BAD_VENDOR_TYPE); OF1.3's own dec_nw_ttl is the same action.
            return parser.OFPActionDecNwTtl()
        case Ct():
            return _ct(dp, action)
        case Controller(max_len=max_len):
            return parser.OFPActionOutput(ofp.OFPP_CONTROLLER, max_len)
        case Conjunction(conj_id=conj_id, clause=clause, n_clauses=n):
            return parser.NXActionConjunction(clause - 1, n, conj_id)  # wire clause is 0-based
    raise TypeError(f"no OpenFlow action for {action!r}")


def _ct(dp: Datapath, ct: Ct) -> Any:
    parser = dp.ofproto_parser
    inner = [to_action(dp, a) for a in ct.exec_]
    if ct.nat:
        inner.append(parser.NXActionNAT(flags=0))
    return parser.NXActionCT(
        flags=_CT_COMMIT if ct.commit else 0,
        zone_src="",
        zone_ofs_nbits=ct.zone,  # with no zone_src this carries the immediate zone
        recirc_table=_NO_RECIRC if ct.table is None else ct.table.table_id,
        alg=0,
        actions=inner,
    )
