"""Render a ``Flow`` as ovs-ofctl text.

``render(flow)`` reads like ``ovs-ofctl --names --no-stats -O OpenFlow13
dump-flows br-int`` once the bridge has table names (ports stay numeric)::

    cookie=0x1030000008000, table=Classifier, priority=200,in_port=32768
        actions=load:0x3->NXM_NX_REG0[0..3],goto_table:SpoofGuard

(wrapped here; one line in reality). ``render(flow, names=False)`` prints
table numbers instead, which ``ovs-ofctl -O OpenFlow13 add-flow(s)`` accepts.
"""

from __future__ import annotations

from collections.abc import Iterable

from flows import oxm
from flows.fields import CtState
from flows.ir import (
    IN_PORT,
    LOCAL,
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
from flows.oxm import ETH_TYPE_ARP, ETH_TYPE_IP, FieldValue
from flows.table import Goto, TableSpec

# eth_type / ip_proto pairs ovs-ofctl prints as one keyword.
_IP_SHORTHAND = {
    oxm.IP_PROTO_ICMP: "icmp",
    oxm.IP_PROTO_TCP: "tcp",
    oxm.IP_PROTO_UDP: "udp",
    oxm.IP_PROTO_SCTP: "sctp",
}
# ovs-ofctl prints the shorthand after the ct_* fields and before the registers.
_SHORTHAND_ORDER = oxm.info("ct_mark").order + 1


def render(flow: Flow, names: bool = True) -> str:
    """Return ``flow`` as one ovs-ofctl line; table names if ``names`` else numbers."""
    head = [f"cookie={flow.cookie:#x}", f"table={_table(flow.table, names)}"]
    if flow.idle_timeout:
        head.append(f"idle_timeout={flow.idle_timeout}")
    if flow.hard_timeout:
        head.append(f"hard_timeout={flow.hard_timeout}")
    # why: always print priority (ovs-ofctl omits 32768); no Sluice band uses 32768.
    match = ",".join([f"priority={flow.priority}", *render_match(flow.match)])
    return f"{', '.join(head)}, {match} actions={render_actions(flow.actions, names)}"


def render_all(flows: Iterable[Flow], names: bool = True) -> list[str]:
    """Return the rendered lines of ``flows`` sorted by table, priority, text."""
    ordered = sorted(flows, key=lambda f: (f.table.table_id, -f.priority, render(f, names)))
    return [render(f, names) for f in ordered]


def render_match(match: tuple[Match, ...]) -> list[str]:
    """Return the ``field=value`` items of a normalized match, as ovs-ofctl prints them."""
    shorthand, skip = _shorthand({m.field: m.value for m in match})
    items = [
        (oxm.info(m.field).order, f"{oxm.info(m.field).match_name}={_match_value(m)}")
        for m in match
        if m.field not in skip
    ]
    if shorthand:
        items.append((_SHORTHAND_ORDER, shorthand))
    return [text for _, text in sorted(items)]


def _shorthand(values: dict[str, FieldValue]) -> tuple[str, set[str]]:
    eth_type, proto = values.get("eth_type"), values.get("ip_proto")
    if eth_type == ETH_TYPE_IP and isinstance(proto, int) and proto in _IP_SHORTHAND:
        return _IP_SHORTHAND[proto], {"eth_type", "ip_proto"}
    if eth_type == ETH_TYPE_IP:
        return "ip", {"eth_type"}
    if eth_type == ETH_TYPE_ARP:
        return "arp", {"eth_type"}
    return "", set()


def _match_value(m: Match) -> str:
    if m.field == "in_port" and m.value == LOCAL:
        return "LOCAL"
    if m.field == "ct_state":
        assert isinstance(m.value, int)
        mask = m.value if m.mask is None else m.mask
        return _ct_flags(m.value, int(mask))
    if oxm.info(m.field).kind is oxm.Kind.IPV4 and m.mask is not None:
        length = oxm.prefix_len(str(m.mask))
        if length is not None:
            return f"{m.value}/{length}"
    text = _value(m.field, m.value, hex_=m.mask is not None)
    return text if m.mask is None else f"{text}/{_value(m.field, m.mask, hex_=True)}"


def _ct_flags(value: int, mask: int) -> str:
    out = []
    for bit, name in enumerate(CtState.NAMES):
        if mask & (1 << bit):
            out.append(("+" if value & (1 << bit) else "-") + name)
    return "".join(out)


def _value(field: str, value: FieldValue, hex_: bool = False) -> str:
    if isinstance(value, str):
        return value
    return f"{value:#x}" if hex_ or oxm.info(field).hex else str(value)


def _table(spec: TableSpec, names: bool) -> str:
    return spec.name if names else str(spec.table_id)


def _bits(field: str, start: int, end: int) -> str:
    nxm = oxm.info(field).nxm
    if start == 0 and end == oxm.info(field).bits - 1:
        return f"{nxm}[]"
    return f"{nxm}[{start}]" if start == end else f"{nxm}[{start}..{end}]"


def _whole(field: str) -> str:
    return _bits(field, 0, oxm.info(field).bits - 1)


def render_actions(actions: tuple[Action, ...], names: bool = True) -> str:
    """Return the ``actions=`` part; ``drop`` for no actions."""
    return ",".join(render_action(a, names) for a in actions) or "drop"


def render_action(action: Action, names: bool = True) -> str:  # noqa: C901 - flat dispatch
    """Return one action as ovs-ofctl prints it."""
    match action:
        case Output(port=port):
            return {IN_PORT: "IN_PORT", LOCAL: "LOCAL"}.get(port, f"output:{port}")
        case OutputReg(field=field, start=start, end=end):
            return f"output:{_bits(field, start, end)}"
        case SetField(field=field, value=value):
            return f"set_field:{_value(field, value)}->{field}"
        case Load(field=field, start=start, end=end, value=value):
            return f"load:{value:#x}->{_bits(field, start, end)}"
        case Move(src=src, dst=dst):
            return f"move:{_whole(src)}->{_whole(dst)}"
        case DecTtl():
            return "dec_ttl"
        case Ct():
            return _ct(action, names)
        case Controller(max_len=max_len):
            return f"CONTROLLER:{max_len}"
        case Conjunction(conj_id=conj_id, clause=clause, n_clauses=n):
            return f"conjunction({conj_id},{clause}/{n})"
        case Goto(table=table):
            return f"goto_table:{_table(table, names)}"
    raise TypeError(f"cannot render {action!r}")


def _ct(ct: Ct, names: bool) -> str:
    args = ["commit"] if ct.commit else []
    if ct.table is not None:
        args.append(f"table={_table(ct.table, names)}")
    args.append(f"zone={ct.zone}")
    if ct.nat:
        args.append("nat")
    if ct.exec_:
        args.append(f"exec({render_actions(ct.exec_)})")
    return f"ct({','.join(args)})"
