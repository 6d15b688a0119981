"""Named register fields and marks, with their bit layout next to each.

Registers carry per-packet facts from one table to a later one. Nothing else in
``flows/`` writes ``reg0``/``reg1`` or bit offsets by hand: use ``FIELD.load(v)``,
``MARK.load()`` and ``MARK.match()``. ``docs/pipeline.md`` repeats this map and a
unit test keeps the two equal.

Register map::

    reg0[0..3]   PKT_SOURCE        where the packet entered br-int
    reg0[4..7]   PKT_DESTINATION   where L3Forwarding decided it leaves
    reg0[8]      OUTPUT_PORT_SET   1 = TARGET_OFPORT holds the output port
    reg1[0..31]  TARGET_OFPORT     output port chosen by L3Forwarding
    reg2[0..31]  ARP_SCRATCH       scratch for swapping arp_spa/arp_tpa
    ct_mark[0]   CT_FROM_GATEWAY   connection entered br-int from the gateway
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from flows import oxm
from flows.ir import Load, Match, OutputReg

# why: one zone for all pod traffic on the node; 65520 keeps clear of the low
# zone numbers other tools (and the host's default zone 0) use.
CT_ZONE: Final = 65520


@dataclass(frozen=True)
class RegField:
    """Bits ``start..end`` (inclusive) of the OpenFlow field ``field``."""

    name: str
    field: str
    start: int
    end: int

    def __post_init__(self) -> None:
        bits = oxm.info(self.field).bits
        if not 0 <= self.start <= self.end < bits:
            raise ValueError(f"{self.name}: bits {self.start}..{self.end} outside {self.field}")

    @property
    def n_bits(self) -> int:
        """Width of the range in bits."""
        return self.end - self.start + 1

    @property
    def mask(self) -> int:
        """Mask of the range within the whole field."""
        return ((1 << self.n_bits) - 1) << self.start

    @property
    def whole(self) -> bool:
        """Whether the range covers the whole field."""
        return self.start == 0 and self.n_bits == oxm.info(self.field).bits

    def spec(self) -> str:
        """Return the ``reg0[0..3]`` notation used by docs (and ovs-ofctl)."""
        if self.start == self.end:
            return f"{self.field}[{self.start}]"
        return f"{self.field}[{self.start}..{self.end}]"

    def load(self, value: int) -> Load:
        """Return the action that writes ``value`` into this range."""
        return Load(self.field, self.start, self.end, value)

    def output(self) -> OutputReg:
        """Return the action that outputs to the port number held in this range."""
        return OutputReg(self.field, self.start, self.end)


@dataclass(frozen=True)
class RegMark:
    """A named value of a ``RegField``."""

    name: str
    field: RegField
    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value < (1 << self.field.n_bits):
            raise ValueError(f"{self.name}: {self.value} does not fit {self.field.name}")

    @property
    def shifted(self) -> int:
        """Value in position within the whole field."""
        return self.value << self.field.start

    def load(self) -> Load:
        """Return the action that sets this mark."""
        return self.field.load(self.value)

    def match(self) -> Match:
        """Return the match item that tests for this mark."""
        return Match(self.field.field, self.shifted, self.field.mask)


PKT_SOURCE: Final = RegField("PKT_SOURCE", "reg0", 0, 3)
FROM_TUNNEL: Final = RegMark("FROM_TUNNEL", PKT_SOURCE, 1)
FROM_GATEWAY: Final = RegMark("FROM_GATEWAY", PKT_SOURCE, 2)
FROM_POD: Final = RegMark("FROM_POD", PKT_SOURCE, 3)
FROM_UPLINK: Final = RegMark("FROM_UPLINK", PKT_SOURCE, 4)

PKT_DESTINATION: Final = RegField("PKT_DESTINATION", "reg0", 4, 7)
TO_TUNNEL: Final = RegMark("TO_TUNNEL", PKT_DESTINATION, 1)
TO_GATEWAY: Final = RegMark("TO_GATEWAY", PKT_DESTINATION, 2)
TO_POD: Final = RegMark("TO_POD", PKT_DESTINATION, 3)
TO_UPLINK: Final = RegMark("TO_UPLINK", PKT_DESTINATION, 4)

OUTPUT_PORT_SET_FIELD: Final = RegField("OUTPUT_PORT_SET_FIELD", "reg0", 8, 8)
OUTPUT_PORT_SET: Final = RegMark("OUTPUT_PORT_SET", OUTPUT_PORT_SET_FIELD, 1)

TARGET_OFPORT: Final = RegField("TARGET_OFPORT", "reg1", 0, 31)
ARP_SCRATCH: Final = RegField("ARP_SCRATCH", "reg2", 0, 31)

CT_MARK_FROM_GATEWAY_FIELD: Final = RegField("CT_MARK_FROM_GATEWAY_FIELD", "ct_mark", 0, 0)
CT_FROM_GATEWAY: Final = RegMark("CT_FROM_GATEWAY", CT_MARK_FROM_GATEWAY_FIELD, 1)

REG_FIELDS: Final[tuple[RegField, ...]] = (
    PKT_SOURCE,
    PKT_DESTINATION,
    OUTPUT_PORT_SET_FIELD,
    TARGET_OFPORT,
    ARP_SCRATCH,
    CT_MARK_FROM_GATEWAY_FIELD,
)
MARKS: Final[tuple[RegMark, ...]] = (
    FROM_TUNNEL,
    FROM_GATEWAY,
    FROM_POD,
    FROM_UPLINK,
    TO_TUNNEL,
    TO_GATEWAY,
    TO_POD,
    TO_UPLINK,
    OUTPUT_PORT_SET,
    CT_FROM_GATEWAY,
)


class CtState:
    """``ct_state`` bits (OVS ``CS_*``) and the ``+a-b`` flag names ovs-ofctl prints."""

    NEW: Final = 0x01
    EST: Final = 0x02
    REL: Final = 0x04
    RPL: Final = 0x08
    INV: Final = 0x10
    TRK: Final = 0x20
    SNAT: Final = 0x40
    DNAT: Final = 0x80
    NAMES: Final = ("new", "est", "rel", "rpl", "inv", "trk", "snat", "dnat")


def ct_state(plus: int = 0, minus: int = 0) -> tuple[int, int]:
    """Return ``(value, mask)`` for ``ct_state`` with ``plus`` bits set, ``minus`` clear."""
    return plus, plus | minus
