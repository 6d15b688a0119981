"""Convert IR flows to OpenFlow 1.3 messages. Builds messages; never sends.

The only module of ``flows/`` that imports os-ken. ``dp`` is anything with
``.ofproto`` and ``.ofproto_parser`` for OpenFlow 1.3: a connected os-ken
``Datapath`` or ``os_ken.ofproto.ofproto_protocol.ProtocolDesc`` in tests.
``add_flow`` & co. build os-ken message objects; ``encode_add`` & co. write
the same messages straight to bytes (xid 0), which is what the reconciler sends.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from itertools import chain
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
from flows.oxm import FIELDS, WIRE, encode_tlv, info
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


_IR_NAME: Final = {f.osken: f.name for f in FIELDS.values()}


def installed_match(match: Any) -> tuple[Any, ...]:
    """The IR form (``Flow.match``) of an ``OFPMatch`` os-ken parsed from the switch.

    An installed flow and a ``Flow`` are the same OpenFlow flow when table,
    priority and this equal ``Flow.match``: os-ken's parsed values are the IR's
    normalized values (ints, lower-case MACs, dotted IPv4), masks included. A
    match with a field the IR does not know comes back as os-ken's sorted items,
    which equal no ``Flow.match``.
    """
    items = []
    for key, value in match.items():
        name = _IR_NAME.get(key)
        if name is None:
            return tuple(sorted(match.items(), key=lambda kv: kv[0]))
        items.append(Match(name, *value) if isinstance(value, tuple) else Match(name, value))
    items.sort(key=lambda m: FIELDS[m.field].order)
    return tuple(items)


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
            return parser.NXActionOutputReg(nicira_ext.ofs_nbits(start, end), info(field).osken, 0)
        case SetField(field=field, value=value):
            return parser.OFPActionSetField(**{info(field).osken: value})
        case Load(field=field, start=start, end=end, value=value):
            return parser.NXActionRegLoad(
                nicira_ext.ofs_nbits(start, end), info(field).osken, value
            )
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


# --- pre-encoded messages -----------------------------------------------------
# why: os-ken's objects (OFPMatch runs every value through netaddr) cost more than
# everything else in a full sync. tests/unit/flows/test_ofwire.py holds these
# encoders byte-identical to the builders above; controller/switch.py sets xids.
OFP_VERSION: Final = 4  # OpenFlow 1.3
OFPT_EXPERIMENTER: Final = 4
OFPT_FLOW_MOD: Final = 14
OFPFC_ADD: Final = 0
OFPFC_MODIFY_STRICT: Final = 2
OFPFC_DELETE_STRICT: Final = 4
_NO_BUFFER: Final = 0xFFFFFFFF
_ANY: Final = 0xFFFFFFFF  # OFPP_ANY / OFPG_ANY
_OFPP_CONTROLLER: Final = 0xFFFFFFFD
_NXT_FLOW_MOD: Final = 13
# ofp_header, ofp_flow_mod up to the match, ofp_match type (OXM) and length
_FLOW_MOD_HEAD: Final = struct.Struct("!BBHIQQBBHHHIIIH2xHH")
_EXP_HEAD: Final = struct.Struct("!BBHIII")  # ofp_header, experimenter, exp_type
_ACTION_HEAD: Final = struct.Struct("!HH")
_OUTPUT: Final = struct.Struct("!HHIH6x")
# Nicira actions: OFPAT_EXPERIMENTER, len, Nicira id, subtype, then the body (os-ken's layouts)
_NX_LOAD: Final = struct.Struct("!HHIHHIQ")  # ofs_nbits, dst header, value
_NX_OUTPUT_REG: Final = struct.Struct("!HHIHHIH6x")  # ofs_nbits, src header, max_len
_NX_MOVE: Final = struct.Struct("!HHIHHHHII")  # n_bits, src_ofs, dst_ofs, src, dst
_NX_CONJ: Final = struct.Struct("!HHIHBBI")  # clause, n_clauses, id
_NX_CT: Final = struct.Struct("!HHIHH4xHB3xH")  # flags, zone_src, zone, recirc_table, alg
_DEC_NW_TTL: Final = struct.pack("!HH4x", 24, 8)
_NX_NAT: Final = struct.pack("!HHIH2xHH", 0xFFFF, 16, NX_EXPERIMENTER_ID, 36, 0, 0)
_GOTO: Final = struct.Struct("!HHB3x")
_APPLY: Final = struct.Struct("!HH4x")


def encode_add(flow: Flow) -> bytes:
    """``add_flow``'s message, encoded directly (xid 0)."""
    return _encode_flow_mod(flow, OFPFC_ADD, encode_instructions(flow.actions))


def encode_modify(flow: Flow) -> bytes:
    """``modify_flow``'s message, encoded directly (xid 0)."""
    return _encode_flow_mod(flow, OFPFC_MODIFY_STRICT, encode_instructions(flow.actions))


def encode_delete(flow: Flow) -> bytes:
    """``delete_flow``'s message, encoded directly (xid 0)."""
    return _encode_flow_mod(flow, OFPFC_DELETE_STRICT, b"")


def encode_delta(delta: Delta) -> Iterator[bytes]:
    """``delta_msgs``'s messages, encoded directly: deletes, then adds, then modifies.

    An iterator: ``Switch.send_batch`` sends while it encodes, so a delta of
    tens of thousands of flows (a policy over a big cluster) is never held
    encoded all at once (≈ 150 bytes per flow-mod).
    """
    return chain(
        map(encode_delete, delta.deletes),
        map(encode_add, delta.adds),
        map(encode_modify, delta.modifies),
    )


def _encode_flow_mod(flow: Flow, command: int, instructions: bytes) -> bytes:
    tlvs = flow.oxm_match
    match_len = 4 + len(tlvs)
    pad = -match_len % 8
    head = _FLOW_MOD_HEAD.pack(
        OFP_VERSION, OFPT_FLOW_MOD, 48 + match_len + pad + len(instructions), 0,
        flow.cookie, 0, flow.table.table_id, command,  # cookie_mask 0
        flow.idle_timeout, flow.hard_timeout, flow.priority,
        _NO_BUFFER, _ANY, _ANY, 0,  # buffer, out_port, out_group, flags
        1, match_len,  # OFPMT_OXM
    )  # fmt: skip
    return b"".join((head, tlvs, bytes(pad), instructions))


def encode_recookie(flow: Flow, old_cookie: int) -> bytes:
    """``recookie_flow``'s message, encoded directly (xid 0); same ``ValueError``."""
    if not 0 <= old_cookie <= _ALL_ONES:
        raise ValueError(f"old cookie {old_cookie:#x} out of range")
    tlvs = flow.oxm_match + struct.pack("!IQQ", NXM_NX_COOKIE_W, old_cookie, _ALL_ONES)
    body = _NX_FLOW_MOD.pack(
        flow.cookie, (flow.table.table_id << 8) | OFPFC_MODIFY_STRICT,  # why: see recookie_flow
        flow.idle_timeout, flow.hard_timeout, flow.priority, _NO_BUFFER, 0xFFFF, 0, len(tlvs),
    )  # fmt: skip
    tail = b"".join((body, tlvs, bytes(-len(tlvs) % 8), encode_instructions(flow.actions)))
    length = _EXP_HEAD.size + len(tail)
    head = _EXP_HEAD.pack(
        OFP_VERSION, OFPT_EXPERIMENTER, length, 0, NX_EXPERIMENTER_ID, _NXT_FLOW_MOD
    )
    return head + tail


def encode_instructions(actions: tuple[Action, ...]) -> bytes:
    """``to_instructions``'s bytes: apply-actions (if any) then goto-table."""
    applied, gotos = [], b""
    for action in actions:
        if type(action) is Goto:
            gotos += _GOTO.pack(1, 8, action.table.table_id)
        else:
            applied.append(encode_action(action))
    if not applied:
        return gotos
    body = b"".join(applied)
    return _APPLY.pack(4, 8 + len(body)) + body + gotos


def encode_action(action: Action) -> bytes:
    """``to_action``'s bytes for one IR action (not ``Goto``)."""
    encode = _ACTION_BYTES.get(type(action))
    if encode is None:
        raise TypeError(f"no OpenFlow action for {action!r}")
    return encode(action)


def _set_field(action: SetField) -> bytes:
    tlv = encode_tlv(action.field, action.value)
    length = 8 * ((len(tlv) + 11) // 8)  # header + TLV, padded to 8
    return _ACTION_HEAD.pack(25, length) + tlv + bytes(length - 4 - len(tlv))


def _reg_load(a: Load) -> bytes:
    ofs_nbits = (a.start << 6) | (a.end - a.start)  # nicira_ext.ofs_nbits
    return _NX_LOAD.pack(
        0xFFFF, 24, NX_EXPERIMENTER_ID, 7, ofs_nbits, WIRE[a.field].header, a.value
    )


def _output_reg(a: OutputReg) -> bytes:
    ofs_nbits = (a.start << 6) | (a.end - a.start)
    return _NX_OUTPUT_REG.pack(
        0xFFFF, 24, NX_EXPERIMENTER_ID, 15, ofs_nbits, WIRE[a.field].header, 0
    )


def _reg_move(a: Move) -> bytes:
    src, dst = WIRE[a.src].header, WIRE[a.dst].header
    return _NX_MOVE.pack(0xFFFF, 24, NX_EXPERIMENTER_ID, 6, info(a.src).bits, 0, 0, src, dst)


def _conjunction(a: Conjunction) -> bytes:
    # wire clause is 0-based
    return _NX_CONJ.pack(0xFFFF, 16, NX_EXPERIMENTER_ID, 34, a.clause - 1, a.n_clauses, a.conj_id)


def _encode_ct(ct: Ct) -> bytes:
    inner = b"".join(encode_action(a) for a in ct.exec_) + (_NX_NAT if ct.nat else b"")
    recirc = _NO_RECIRC if ct.table is None else ct.table.table_id
    flags = _CT_COMMIT if ct.commit else 0
    # zone_src 0: the zone is immediate; nested actions are each a multiple of 8 bytes
    return (
        _NX_CT.pack(0xFFFF, 24 + len(inner), NX_EXPERIMENTER_ID, 35, flags, ct.zone, recirc, 0)
        + inner
    )


# why: a dict on the exact type beats a `match` statement's isinstance chain;
# the IR's action classes are final.
_ACTION_BYTES: Final[dict[type, Callable[[Any], bytes]]] = {
    Output: lambda a: _OUTPUT.pack(0, 16, a.port, 0),
    OutputReg: _output_reg,
    SetField: _set_field,
    Load: _reg_load,
    Move: _reg_move,
    DecTtl: lambda _a: _DEC_NW_TTL,
    Ct: _encode_ct,
    Controller: lambda a: _OUTPUT.pack(0, 16, _OFPP_CONTROLLER, a.max_len),
    Conjunction: _conjunction,
}
