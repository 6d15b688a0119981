"""A small, pure OpenFlow 1.3 table emulator for ``Flow`` objects (after faucet's fakeoftable).

It applies flow adds, strict modifies/deletes and deletes by cookie mask, and
answers "where does this packet leave, rewritten how" by walking the tables
like OVS: highest-priority match wins, actions run in order, ``goto_table``
continues. Enough of OVS is modelled for the Sluice pipeline:

* a packet is a dict of IR field names (``eth_src``, ``ip_dst``, ``in_port``,
  ``nw_ttl``, ...); absent fields read as 0, like OVS metadata;
* ``ct(...)``: after it, ``ct_state`` is ``packet["ct_state"]`` (default
  ``+trk+new``) and ``ct_mark`` is ``packet["ct_mark"]`` (default 0: the mark of
  the connection the packet belongs to); ``table=`` continues there;
  ``commit`` is recorded in ``LookupResult.commits``;
* output to the ingress port is silently skipped unless it is ``IN_PORT``;
* ``dec_ttl`` on TTL 0 or 1 stops the packet (``ttl_expired``);
* two matching flows at the same top priority raise ``AmbiguousLookup``:
  OVS would pick one arbitrarily, which is a pipeline bug;
* conjunctive matches as ovs-fields(7) describes them: flows whose actions
  are all ``conjunction(id,k/n)`` are "soft". From the highest priority down,
  as long as it is above the best ordinary ("hard") match, a conjunction
  whose every clause 1..n has a matching soft flow completes; the table is
  then searched again with ``conj_id=id``, ignoring soft flows, and that
  flow runs. Two conjunctions completing at one priority, or one completing
  at the priority of the best hard match, raise ``AmbiguousLookup``; a
  completed id with no ``conj_id`` flow raises ``LookupError`` (OVS would
  fall through silently, which hides a compiler bug).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from flows import oxm
from flows.diff import Delta, Identity
from flows.fields import CtState
from flows.ir import (
    IN_PORT,
    Action,
    Conjunction,
    Controller,
    Ct,
    DecTtl,
    Flow,
    Load,
    Move,
    Output,
    OutputReg,
    SetField,
)
from flows.oxm import ETH_TYPE_ARP, ETH_TYPE_IP, FieldValue
from flows.pipeline import TABLES
from flows.table import Goto

Packet = Mapping[str, FieldValue]
_MAX_HOPS: Final = 64
_CT_KEYS: Final = ("ct_state", "ct_mark")


class AmbiguousLookup(RuntimeError):
    """Two flows of equal top priority match the same packet."""


@dataclass(frozen=True)
class Emitted:
    """A packet leaving by ``port``, with its fields after all rewrites."""

    port: int
    packet: dict[str, FieldValue]


@dataclass(frozen=True)
class LookupResult:
    """What happened to one packet."""

    emitted: tuple[Emitted, ...]
    trace: tuple[str, ...]  # "Table:priority" of every flow hit, in order
    to_controller: bool = False
    ttl_expired: bool = False
    commits: tuple[tuple[int, int], ...] = ()  # (zone, ct_mark) of each ct(commit)

    @property
    def dropped(self) -> bool:
        """Whether the packet left nowhere (not even to the controller)."""
        return not self.emitted and not self.to_controller

    @property
    def ports(self) -> tuple[int, ...]:
        """Ports the packet left by, in order."""
        return tuple(e.port for e in self.emitted)


@dataclass
class _Run:
    pkt: dict[str, int]
    ct_after: tuple[int, int]  # (ct_state, ct_mark) a ct() action yields
    emitted: list[Emitted] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)
    commits: list[tuple[int, int]] = field(default_factory=list)
    to_controller: bool = False
    ttl_expired: bool = False
    next_table: int | None = None


class FakeTable:
    """In-memory flow tables of one bridge."""

    def __init__(self) -> None:
        self._flows: dict[Identity, Flow] = {}
        # why: per-table index so a lookup scans one table, not the bridge.
        self._compiled: dict[int, dict[Identity, list[tuple[str, int, int]]]] = {}

    def add(self, flow: Flow) -> None:
        """OFPFC_ADD: install ``flow``, replacing one with the same identity."""
        self._flows[flow.identity] = flow
        compiled = [_compile(m.field, m.value, m.mask) for m in flow.match]
        self._compiled.setdefault(flow.table.table_id, {})[flow.identity] = compiled

    def modify_strict(self, flow: Flow) -> None:
        """OFPFC_MODIFY_STRICT: new actions for an existing flow; cookie kept; no add."""
        old = self._flows.get(flow.identity)
        if old is not None:
            self._flows[flow.identity] = replace(old, actions=flow.actions)

    def delete_strict(self, flow: Flow) -> None:
        """OFPFC_DELETE_STRICT: remove the flow with ``flow``'s identity, if any."""
        self._flows.pop(flow.identity, None)
        self._compiled.get(flow.table.table_id, {}).pop(flow.identity, None)

    def delete_by_cookie(self, cookie: int, mask: int) -> None:
        """OFPFC_DELETE in all tables of flows whose cookie matches ``cookie/mask``."""
        for flow in list(self._flows.values()):
            if flow.cookie & mask == cookie & mask:
                self.delete_strict(flow)

    def add_all(self, flows: Iterable[Flow]) -> None:
        """Add every flow of ``flows``."""
        for flow in flows:
            self.add(flow)

    def apply(self, delta: Delta) -> None:
        """Apply a ``Delta`` in the order ``ofmsg.delta_msgs`` sends it."""
        for flow in delta.deletes:
            self.delete_strict(flow)
        self.add_all(delta.adds)
        for flow in delta.modifies:
            self.modify_strict(flow)

    def flows(self) -> frozenset[Flow]:
        """Return every installed flow (a snapshot to compare tables with)."""
        return frozenset(self._flows.values())

    def lookup(self, packet: Packet) -> LookupResult:
        """Run ``packet`` through the tables from table 0; see the module docstring."""
        run = _start(packet)
        table_id: int | None = 0
        for _ in range(_MAX_HOPS):
            if table_id is None:
                break
            flow = self._best(table_id, run.pkt)
            if flow is None:
                break  # table miss with no flow: OpenFlow 1.3 drops
            run.trace.append(f"{flow.table.name}:{flow.priority}")
            table_id = self._execute(flow, run)
        else:
            raise RuntimeError(f"packet looped through {_MAX_HOPS} tables: {run.trace}")
        return LookupResult(
            tuple(run.emitted),
            tuple(run.trace),
            run.to_controller,
            run.ttl_expired,
            tuple(run.commits),
        )

    def is_output(self, packet: Packet, port: int) -> bool:
        """Return whether ``packet`` leaves by ``port``."""
        return port in self.lookup(packet).ports

    def arp_reply(self, packet: Packet) -> dict[str, FieldValue] | None:
        """Return the ARP reply sent back out of the ingress port, or ``None``."""
        for emitted in self.lookup(packet).emitted:
            p = emitted.packet
            if emitted.port == packet["in_port"] and p.get("arp_op") == 2:
                return p
        return None

    def _best(self, table_id: int, pkt: dict[str, int]) -> Flow | None:
        hits = self._hits(table_id, pkt)
        hard = [f for f in hits if not _is_soft(f)]
        top = max((f.priority for f in hard), default=-1)
        conj = self._conjunctive(table_id, pkt, [f for f in hits if _is_soft(f)], top)
        return conj if conj is not None else _single_top(table_id, hard)

    def _hits(self, table_id: int, pkt: dict[str, int]) -> list[Flow]:
        compiled = self._compiled.get(table_id, {})
        return [self._flows[ident] for ident, c in compiled.items() if _matches(c, pkt)]

    def _conjunctive(
        self, table_id: int, pkt: dict[str, int], soft: list[Flow], hard_top: int
    ) -> Flow | None:
        """Return the flow a completed conjunction leads to, if any (module docstring)."""
        for priority in sorted({f.priority for f in soft if f.priority >= hard_top}, reverse=True):
            done = _completed([f for f in soft if f.priority == priority])
            if len(done) > 1 or (done and priority == hard_top):
                raise AmbiguousLookup(
                    f"{TABLES[table_id].name}: conjunctions {sorted(done)} overlap at {priority}"
                )
            if done:
                again = self._hits(table_id, pkt | {"conj_id": done[0]})
                found = _single_top(table_id, [f for f in again if not _is_soft(f)])
                if found is None or "conj_id" not in found.matches():
                    raise LookupError(f"{TABLES[table_id].name}: no conj_id={done[0]} flow")
                return found
        return None

    def _execute(self, flow: Flow, run: _Run) -> int | None:
        run.next_table = None
        goto = None
        for action in flow.actions:
            if isinstance(action, Goto):
                goto = action.table.table_id
            elif not _do(action, run):
                return None
        if goto is not None and run.next_table is not None:
            raise NotImplementedError("goto_table together with ct(table=) is not modelled")
        return goto if goto is not None else run.next_table


def _is_soft(flow: Flow) -> bool:
    return bool(flow.actions) and all(isinstance(a, Conjunction) for a in flow.actions)


def _completed(soft: list[Flow]) -> list[int]:
    """Return the ids of conjunctions all of whose clauses have a flow in ``soft``."""
    seen: dict[int, set[int]] = {}
    sizes: dict[int, int] = {}
    for flow in soft:
        for action in flow.actions:
            assert isinstance(action, Conjunction)
            if sizes.setdefault(action.conj_id, action.n_clauses) != action.n_clauses:
                raise ValueError(f"conjunction {action.conj_id}: clause counts differ")
            seen.setdefault(action.conj_id, set()).add(action.clause)
    return sorted(cid for cid, clauses in seen.items() if len(clauses) == sizes[cid])


def _single_top(table_id: int, hits: list[Flow]) -> Flow | None:
    if not hits:
        return None
    top = max(f.priority for f in hits)
    best = [f for f in hits if f.priority == top]
    if len(best) > 1:
        raise AmbiguousLookup(f"{TABLES[table_id].name}: {len(best)} flows at priority {top}")
    return best[0]


def _start(packet: Packet) -> _Run:
    ct_state = packet.get("ct_state", CtState.NEW | CtState.TRK)
    ct_mark = packet.get("ct_mark", 0)
    pkt = {k: oxm.to_int(k, v) for k, v in packet.items() if k not in _CT_KEYS}
    if pkt.get("eth_type") == ETH_TYPE_IP:
        pkt.setdefault("nw_ttl", 64)
    assert isinstance(ct_state, int) and isinstance(ct_mark, int)
    return _Run(pkt, (ct_state, ct_mark))


def _compile(name: str, value: FieldValue, mask: FieldValue | None) -> tuple[str, int, int]:
    int_mask = oxm.full_mask(oxm.info(name)) if mask is None else oxm.to_int(name, mask)
    return name, oxm.to_int(name, value), int_mask


def _matches(compiled: list[tuple[str, int, int]], pkt: dict[str, int]) -> bool:
    return all(pkt.get(name, 0) & mask == value for name, value, mask in compiled)


def _do(action: Action, run: _Run) -> bool:  # noqa: C901 - flat dispatch
    """Execute one action; return False if the packet stops here."""
    pkt = run.pkt
    match action:
        case Output(port=port):
            _emit(run, pkt.get("in_port", 0) if port == IN_PORT else port, port == IN_PORT)
        case OutputReg(field=name, start=start, end=end):
            _emit(run, (pkt.get(name, 0) >> start) & ((1 << (end - start + 1)) - 1), False)
        case SetField(field=name, value=value):
            pkt[name] = oxm.to_int(name, value)
        case Load():
            _load(pkt, action)
        case Move(src=src, dst=dst):
            pkt[dst] = pkt.get(src, 0)
        case DecTtl():
            return _dec_ttl(run)
        case Ct():
            _ct(action, run)
        case Controller():
            run.to_controller = True
        case Conjunction():
            raise AssertionError("conjunction flows are resolved in lookup, never executed")
    return True


def _emit(run: _Run, port: int, in_port_ok: bool) -> None:
    # why: OVS never sends a packet back out of its ingress port unless the
    # action says IN_PORT explicitly.
    if port == run.pkt.get("in_port") and not in_port_ok:
        return
    user = {k: oxm.from_int(k, v) for k, v in run.pkt.items()}
    run.emitted.append(Emitted(port, user))


def _load(pkt: dict[str, int], load: Load) -> None:
    mask = ((1 << (load.end - load.start + 1)) - 1) << load.start
    pkt[load.field] = (pkt.get(load.field, 0) & ~mask) | (load.value << load.start)


def _dec_ttl(run: _Run) -> bool:
    if run.pkt.get("eth_type") != ETH_TYPE_IP:
        return True
    if run.pkt.get("nw_ttl", 0) <= 1:
        run.ttl_expired = True
        return False
    run.pkt["nw_ttl"] -= 1
    return True


def _ct(ct: Ct, run: _Run) -> None:
    run.pkt["ct_state"], run.pkt["ct_mark"] = run.ct_after
    run.pkt["ct_zone"] = ct.zone
    if ct.commit:
        for load in ct.exec_:
            _load(run.pkt, load)
        run.commits.append((ct.zone, run.pkt["ct_mark"]))
    if ct.table is not None:
        run.next_table = ct.table.table_id


def ip_packet(
    in_port: int, eth_src: str, eth_dst: str, ip_src: str, ip_dst: str, ttl: int = 64
) -> dict[str, FieldValue]:
    """Return an IPv4 packet dict for ``FakeTable.lookup``."""
    return {
        "in_port": in_port,
        "eth_type": ETH_TYPE_IP,
        "eth_src": eth_src,
        "eth_dst": eth_dst,
        "ip_src": ip_src,
        "ip_dst": ip_dst,
        "nw_ttl": ttl,
    }


def arp_request(
    in_port: int, sha: str, spa: str, tpa: str, eth_src: str | None = None
) -> dict[str, FieldValue]:
    """Return a broadcast ARP request "who has ``tpa``? tell ``spa``" from ``sha``."""
    return {
        "in_port": in_port,
        "eth_type": ETH_TYPE_ARP,
        "eth_src": eth_src or sha,
        "eth_dst": "ff:ff:ff:ff:ff:ff",
        "arp_op": 1,
        "arp_sha": sha,
        "arp_spa": spa,
        "arp_tha": "00:00:00:00:00:00",
        "arp_tpa": tpa,
    }
