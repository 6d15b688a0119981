"""The flow IR: a frozen, hashable ``Flow`` plus small typed actions.

Nothing here depends on os-ken; ``flows/ofmsg.py`` converts a ``Flow`` to an
``OFPFlowMod`` and ``flows/render.py`` to ovs-ofctl text. Building a ``Flow``
checks it against the pipeline contract and against what OVS would reject, so
a bad flow fails in the builder that made it, not at the switch.

Identity: two flows are "the same flow" to OpenFlow when table, priority and
match are equal (``Flow.identity``); cookie, actions and timeouts are payload.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Final, NamedTuple, cast

from flows import cookies, oxm, pipeline
from flows.oxm import FieldValue
from flows.table import Goto, PipelineError, TableSpec

IN_PORT: Final = 0xFFFFFFF8  # OFPP_IN_PORT: send back out of the port it came in on
LOCAL: Final = 0xFFFFFFFE  # OFPP_LOCAL: the bridge's own internal port (the host)
MAX_PORT: Final = 0xFFFFFF00  # OFPP_MAX: highest regular port number
NO_BUFFER: Final = 0xFFFF  # OFPCML_NO_BUFFER: send the whole packet to the controller


class Match(NamedTuple):
    """One match item ``field=value[/mask]``; ``mask=None`` is an exact match."""

    field: str
    value: FieldValue
    mask: FieldValue | None = None


@dataclass(frozen=True)
class Output:
    """``output:PORT`` (``IN_PORT`` for the ingress port, ``LOCAL`` for the host)."""

    port: int

    def __post_init__(self) -> None:
        if not (0 < self.port <= MAX_PORT or self.port in (IN_PORT, LOCAL)):
            raise ValueError(f"output: bad port {self.port}")


@dataclass(frozen=True)
class OutputReg:
    """``output:NXM_NX_REG1[]`` - output to the port number held in a field range."""

    field: str
    start: int
    end: int


@dataclass(frozen=True)
class SetField:
    """``set_field:VALUE->FIELD`` (eth_src/dst, arp_*, tun_dst, tun_id, ...)."""

    field: str
    value: FieldValue

    def __post_init__(self) -> None:
        value, mask = oxm.normalize(self.field, self.value)
        if mask is not None:
            raise ValueError(f"set_field {self.field}: a prefix is not a value")
        object.__setattr__(self, "value", value)


@dataclass(frozen=True)
class Load:
    """``load:VALUE->FIELD[start..end]`` (registers, ct_mark inside ct exec)."""

    field: str
    start: int
    end: int
    value: int

    def __post_init__(self) -> None:
        bits = oxm.info(self.field).bits
        if not 0 <= self.start <= self.end < bits:
            raise ValueError(f"load: bits {self.start}..{self.end} outside {self.field}")
        if not 0 <= self.value < (1 << (self.end - self.start + 1)):
            raise ValueError(
                f"load: {self.value} does not fit {self.field}[{self.start}..{self.end}]"
            )


@dataclass(frozen=True)
class Move:
    """``move:SRC[]->DST[]`` of two whole fields of the same width."""

    src: str
    dst: str

    def __post_init__(self) -> None:
        if oxm.info(self.src).bits != oxm.info(self.dst).bits:
            raise ValueError(f"move: {self.src} and {self.dst} differ in width")


@dataclass(frozen=True)
class DecTtl:
    """``dec_ttl``: decrement the IPv4 TTL; a packet whose TTL runs out is not forwarded."""


@dataclass(frozen=True)
class Ct:
    """``ct(commit,table=T,zone=Z,nat,exec(...))``; ``table`` recirculates there."""

    zone: int
    commit: bool = False
    table: TableSpec | None = None
    nat: bool = False
    exec_: tuple[Load, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.zone <= 0xFFFF:
            raise ValueError(f"ct: zone {self.zone} out of range")
        if self.exec_ and not self.commit:
            raise ValueError("ct: exec() only takes effect with commit")


@dataclass(frozen=True)
class Controller:
    """``CONTROLLER:max_len`` - send the packet to the controller."""

    max_len: int = NO_BUFFER


@dataclass(frozen=True)
class Conjunction:
    """``conjunction(id,k/n)``; ``clause`` is 1-based as in ovs-ofctl.

    OVS refuses ``n < 2`` (one dimension needs no conjunction) and matches
    ``conj_id`` against the id after a conjunction completes; packets carry
    ``conj_id=0`` otherwise, so Sluice never uses id 0.
    """

    conj_id: int
    clause: int
    n_clauses: int

    def __post_init__(self) -> None:
        if not 1 <= self.clause <= self.n_clauses <= 64 or self.n_clauses < 2:
            raise ValueError(f"conjunction({self.conj_id},{self.clause}/{self.n_clauses})")
        if not 0 < self.conj_id < 2**32:
            raise ValueError(f"conjunction({self.conj_id},{self.clause}/{self.n_clauses})")


Action = Output | OutputReg | SetField | Load | Move | DecTtl | Ct | Controller | Conjunction | Goto


@dataclass(frozen=True, slots=True)
class Flow:
    """One OpenFlow flow. An empty ``actions`` tuple means drop.

    ``match`` is stored normalized and in ovs-ofctl print order, so equality and
    hashing do not depend on how a builder ordered or spelled it. A non-zero
    ``cookie`` is stored with ``table``'s id in its table bits (39..32,
    ``cookies.with_table``), replacing whatever was there: builders pass one
    per-object cookie for all tables; the flow makes it unique per table.
    """

    # why slots: a node holds tens of thousands of flows (≈ 60k with 50 policies
    # in a 10 000-pod cluster); a __dict__ per flow was ≈ 200 bytes of each.
    table: TableSpec
    priority: int
    match: tuple[Match, ...] = ()
    actions: tuple[Action, ...] = ()
    cookie: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0
    _hash: int | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "match", normalize_match(self.match))
        object.__setattr__(self, "actions", tuple(self.actions))
        _check_numbers(self)
        if self.cookie:
            # why: with its table id a cookie names one flow per bridge, not one
            # per table (cookie filters reach all tables; see flows/cookies.py).
            tabled = cookies.with_table(self.cookie, self.table.table_id)
            if tabled != self.cookie:  # why: else keep the caller's (shared) int object
                object.__setattr__(self, "cookie", tabled)
        _check_prerequisites(self.match)
        _check_actions(self)
        _check_action_prerequisites(self)

    def __hash__(self) -> int:
        # why: the dataclass hash re-hashes the table spec (enums included) and
        # every action on each set or dict operation. Equal flows have equal
        # table, priority, match and cookie, so hashing those is enough, and a
        # frozen flow's hash can be kept.
        cached = self._hash
        if cached is None:
            cached = hash((self.table.table_id, self.priority, self.match, self.cookie))
            object.__setattr__(self, "_hash", cached)
        return cached

    def __getstate__(self) -> tuple[object, ...]:
        # why: the cached hash stays behind (str hashes are salted per process);
        # the dataclass's __setstate__ takes the field values in order.
        return tuple(getattr(self, f.name) for f in fields(self) if f.name != "_hash") + (None,)

    @property
    def identity(self) -> tuple[str, int, tuple[Match, ...]]:
        """``(table name, priority, match)``: what OpenFlow treats as the same flow."""
        return (self.table.name, self.priority, self.match)

    def matches(self) -> dict[str, Match]:
        """Return the match items keyed by field name."""
        return {m.field: m for m in self.match}

    @property
    def oxm_match(self) -> bytes:
        """``match`` as OpenFlow OXM TLVs (``oxm.encode_match``)."""
        # why not kept on the flow: a flow is sent about once (a sync adds it, a
        # later diff may delete it), the TLVs themselves are cached per match
        # item in flows.oxm, and keeping the bytes cost ≈ 70 bytes per flow.
        return oxm.encode_match(self.match)


def normalize_match(items: Iterable[Match]) -> tuple[Match, ...]:
    """Normalize match items and sort them into ovs-ofctl print order.

    Raises ``ValueError`` for an unknown field, a bad value or a repeated field.
    """
    out: dict[str, tuple[int, Match]] = {}
    for item in items:
        m = item if type(item) is Match else Match(*item)
        if m.field in out:
            raise ValueError(f"match: field {m.field} given twice")
        try:
            out[m.field] = _normalized(m.field, m.value, m.mask)
        except TypeError:  # an unhashable value: let normalize name the problem
            norm = Match(m.field, *oxm.normalize(m.field, m.value, m.mask))
            out[m.field] = (oxm.info(m.field).order, norm)
    # why: (print order, item) pairs sort without a key function; orders are unique
    return tuple([m for _order, m in sorted(out.values())])


@lru_cache(maxsize=1 << 14, typed=True)
def _normalized(
    field: str, value: oxm.FieldValue, mask: oxm.FieldValue | None
) -> tuple[int, Match]:
    # why: builders repeat the same few values (eth_type, marks, each pod's
    # address) across many flows; normalizing each once halves building a flow.
    return oxm.info(field).order, Match(field, *oxm.normalize(field, value, mask))


def _check_numbers(flow: Flow) -> None:
    if not 0 <= flow.priority <= 0xFFFF:
        raise ValueError(f"priority {flow.priority} out of range")
    if not 0 <= flow.cookie < 2**64:
        raise ValueError(f"cookie {flow.cookie:#x} out of range")
    if not (0 <= flow.idle_timeout <= 0xFFFF and 0 <= flow.hard_timeout <= 0xFFFF):
        raise ValueError("timeouts must fit 16 bits")


def _check_prerequisites(match: tuple[Match, ...]) -> None:
    # why: OVS rejects e.g. nw_dst without ip; catching it here names the builder.
    fields = {m.field: m.value for m in match}
    for name in fields:
        info = oxm.FIELDS[name]  # normalize_match has rejected unknown names
        if info.eth_type is not None and fields.get("eth_type") != info.eth_type:
            raise ValueError(f"match on {name} needs eth_type={info.eth_type:#06x}")
        if info.ip_proto is not None and fields.get("ip_proto") != info.ip_proto:
            raise ValueError(f"match on {name} needs ip_proto={info.ip_proto}")


def _declared(spec: TableSpec) -> bool:
    # why: flows hold the declared spec objects themselves; comparing whole
    # specs field by field for every flow showed up in profiles.
    tables = pipeline.TABLES
    if spec.table_id < len(tables) and tables[spec.table_id] is spec:
        return True
    return pipeline.is_declared(spec)


def _check_actions(flow: Flow) -> None:
    # why: `type(a) is X` rather than isinstance: the action classes are final and
    # these checks run for every flow built (isinstance on unions is slow).
    table, actions = flow.table, flow.actions
    if not _declared(table):
        raise PipelineError(f"table {table.name!r} is not declared in flows/pipeline.py")
    conj = 0
    for index, action in enumerate(actions):
        kind = type(action)
        if kind is Conjunction:
            conj += 1
            continue
        if kind is Goto:
            if index != len(actions) - 1:
                raise PipelineError(f"{table.name}: goto_table must be the last action")
        elif kind is not Ct:
            continue
        target = cast(Goto | Ct, action).table
        if target is not None and not (_declared(target) and table.allows(target)):
            raise PipelineError(
                f"{table.name}: jump to {target.name!r} not in its next tables "
                f"{list(table.next_names)}"
            )
    if conj and conj != len(actions):
        raise ValueError("conjunction actions cannot be mixed with other actions")


def _check_action_prerequisites(flow: Flow) -> None:
    # why: OVS refuses a flow whose actions touch fields its match does not
    # guarantee (e.g. set_field arp_op without arp, ct without ip).
    if not flow.actions:
        return
    have = None
    for m in flow.match:
        if m.field == "eth_type":
            have = m.value
    for action in flow.actions:
        kind = type(action)
        if kind is Ct and have != oxm.ETH_TYPE_IP:
            raise ValueError(f"{flow.table.name}: ct() needs an ip match")
        if kind is SetField or kind is Move:
            for name in _touched_fields(action):
                need = oxm.FIELDS[name].eth_type
                if need is not None and have != need:
                    raise ValueError(
                        f"{flow.table.name}: writing {name} needs eth_type={need:#06x}"
                    )


def _touched_fields(action: Action) -> tuple[str, ...]:
    if isinstance(action, SetField):
        return (action.field,)
    if isinstance(action, Move):
        return (action.src, action.dst)
    return ()
