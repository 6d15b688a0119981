"""Catalogue of the OpenFlow match/set fields the flow IR may use.

Every field has one IR name (OVS's canonical field name, what ``set_field:...->NAME``
prints) and knows how ovs-ofctl prints it in a match, how NXM moves/loads name it,
and which os-ken ``OFPMatch`` keyword carries it. Values are normalized here once
so that two flows built differently compare equal:

* integer fields (``in_port``, ``reg0``, ``tun_id``, ...) hold ``int``;
* MAC fields hold a lower-case ``"aa:bb:cc:dd:ee:ff"`` string;
* IPv4 fields hold a dotted string; a ``"10.0.0.0/24"`` value is split into a
  value and a dotted mask;
* a mask that covers the whole field is dropped (``None``), and the value is
  always ``value & mask`` (as OVS stores it).
"""

from __future__ import annotations

import enum
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, cast

ETH_TYPE_IP: Final = 0x0800
ETH_TYPE_ARP: Final = 0x0806
IP_PROTO_ICMP: Final = 1
IP_PROTO_TCP: Final = 6
IP_PROTO_UDP: Final = 17
IP_PROTO_SCTP: Final = 132

FieldValue = int | str

_MAC_RE: Final = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class Kind(enum.Enum):
    """How a field's value is written and compared."""

    INT = "int"
    MAC = "mac"
    IPV4 = "ipv4"


@dataclass(frozen=True)
class FieldInfo:
    """Static facts about one field (see the module docstring)."""

    name: str
    kind: Kind
    bits: int
    nxm: str  # name inside move:/load: as ovs-ofctl prints it
    order: int  # position in ovs-ofctl's match output (lib/match.c match_format)
    match_name: str = ""  # name in a match as ovs-ofctl prints it; "" = name
    osken: str = ""  # os-ken OFPMatch / OFPActionSetField keyword; "" = name
    hex: bool = False  # ovs-ofctl prints the value in hex
    eth_type: int | None = None  # prerequisite eth_type
    ip_proto: int | None = None  # prerequisite ip_proto

    def __post_init__(self) -> None:
        object.__setattr__(self, "match_name", self.match_name or self.name)
        object.__setattr__(self, "osken", self.osken or self.name)


# why: module constants, also on hot paths: an Enum class attribute costs ~10x a global
_INT, _MAC, _V4 = Kind.INT, Kind.MAC, Kind.IPV4
_IP, _ARP = ETH_TYPE_IP, ETH_TYPE_ARP
F = FieldInfo

# why: `order` mirrors the order in which ovs-ofctl prints match fields, so a
# rendered flow reads exactly like `ovs-ofctl dump-flows` and diffs line up.
_FIELDS: Final[tuple[FieldInfo, ...]] = (
    F("conj_id", _INT, 32, "NXM_NX_CONJ_ID", 10),
    F("ct_state", _INT, 32, "NXM_NX_CT_STATE", 20, hex=True),
    F("ct_zone", _INT, 16, "NXM_NX_CT_ZONE", 21),
    F("ct_mark", _INT, 32, "NXM_NX_CT_MARK", 22, hex=True),
    *(F(f"reg{i}", _INT, 32, f"NXM_NX_REG{i}", 40 + i, hex=True) for i in range(16)),
    F("tun_id", _INT, 64, "NXM_NX_TUN_ID", 60, hex=True, osken="tunnel_id"),
    F("tun_src", _V4, 32, "NXM_NX_TUN_IPV4_SRC", 61, osken="tun_ipv4_src"),
    F("tun_dst", _V4, 32, "NXM_NX_TUN_IPV4_DST", 62, osken="tun_ipv4_dst"),
    F("in_port", _INT, 32, "NXM_OF_IN_PORT", 70),
    F("eth_src", _MAC, 48, "NXM_OF_ETH_SRC", 80, match_name="dl_src"),
    F("eth_dst", _MAC, 48, "NXM_OF_ETH_DST", 81, match_name="dl_dst"),
    F("eth_type", _INT, 16, "NXM_OF_ETH_TYPE", 82, hex=True, match_name="dl_type"),
    F("ip_src", _V4, 32, "NXM_OF_IP_SRC", 90, "nw_src", "ipv4_src", eth_type=_IP),
    F("ip_dst", _V4, 32, "NXM_OF_IP_DST", 91, "nw_dst", "ipv4_dst", eth_type=_IP),
    F("ip_proto", _INT, 8, "NXM_OF_IP_PROTO", 92, "nw_proto", eth_type=_IP),
    F("nw_ttl", _INT, 8, "NXM_NX_IP_TTL", 93, eth_type=_IP),
    F("arp_spa", _V4, 32, "NXM_OF_ARP_SPA", 100, eth_type=_ARP),
    F("arp_tpa", _V4, 32, "NXM_OF_ARP_TPA", 101, eth_type=_ARP),
    F("arp_op", _INT, 16, "NXM_OF_ARP_OP", 102, eth_type=_ARP),
    F("arp_sha", _MAC, 48, "NXM_NX_ARP_SHA", 103, eth_type=_ARP),
    F("arp_tha", _MAC, 48, "NXM_NX_ARP_THA", 104, eth_type=_ARP),
    F("tcp_src", _INT, 16, "NXM_OF_TCP_SRC", 110, "tp_src", eth_type=_IP, ip_proto=6),
    F("tcp_dst", _INT, 16, "NXM_OF_TCP_DST", 111, "tp_dst", eth_type=_IP, ip_proto=6),
    F("udp_src", _INT, 16, "NXM_OF_UDP_SRC", 112, "tp_src", eth_type=_IP, ip_proto=17),
    F("udp_dst", _INT, 16, "NXM_OF_UDP_DST", 113, "tp_dst", eth_type=_IP, ip_proto=17),
    F("sctp_src", _INT, 16, "OXM_OF_SCTP_SRC", 114, "tp_src", eth_type=_IP, ip_proto=132),
    F("sctp_dst", _INT, 16, "OXM_OF_SCTP_DST", 115, "tp_dst", eth_type=_IP, ip_proto=132),
)

FIELDS: Final[dict[str, FieldInfo]] = {f.name: f for f in _FIELDS}

# OXM classes on the wire: Nicira's NXM_1 and OpenFlow basic.
NXM_1: Final = 0x0001
OPENFLOW_BASIC: Final = 0x8000
# (OXM class, field number) of each field as OpenFlow 1.3 messages carry it.
_WIRE_IDS: Final[dict[str, tuple[int, int]]] = {
    "conj_id": (NXM_1, 37),
    "ct_state": (NXM_1, 105),
    "ct_zone": (NXM_1, 106),
    "ct_mark": (NXM_1, 107),
    **{f"reg{i}": (NXM_1, i) for i in range(16)},
    "tun_id": (OPENFLOW_BASIC, 38),
    "tun_src": (NXM_1, 31),
    "tun_dst": (NXM_1, 32),
    "in_port": (OPENFLOW_BASIC, 0),
    "eth_dst": (OPENFLOW_BASIC, 3),
    "eth_src": (OPENFLOW_BASIC, 4),
    "eth_type": (OPENFLOW_BASIC, 5),
    "ip_proto": (OPENFLOW_BASIC, 10),
    "ip_src": (OPENFLOW_BASIC, 11),
    "ip_dst": (OPENFLOW_BASIC, 12),
    "tcp_src": (OPENFLOW_BASIC, 13),
    "tcp_dst": (OPENFLOW_BASIC, 14),
    "udp_src": (OPENFLOW_BASIC, 15),
    "udp_dst": (OPENFLOW_BASIC, 16),
    "sctp_src": (OPENFLOW_BASIC, 17),
    "sctp_dst": (OPENFLOW_BASIC, 18),
    "arp_op": (OPENFLOW_BASIC, 21),
    "arp_spa": (OPENFLOW_BASIC, 22),
    "arp_tpa": (OPENFLOW_BASIC, 23),
    "arp_sha": (OPENFLOW_BASIC, 24),
    "arp_tha": (OPENFLOW_BASIC, 25),
    "nw_ttl": (NXM_1, 29),
}


def info(name: str) -> FieldInfo:
    """Return the catalogue entry for ``name``; raise ``ValueError`` if unknown."""
    try:
        return FIELDS[name]
    except KeyError:
        raise ValueError(f"unknown OpenFlow field {name!r}") from None


def full_mask(field: FieldInfo) -> int:
    """Return the all-ones mask of ``field`` as an int."""
    return (1 << field.bits) - 1


def to_int(name: str, value: FieldValue) -> int:
    """Convert a normalized or user value of field ``name`` to an int."""
    return _to_int(info(name), value)


def _to_int(field: FieldInfo, value: FieldValue) -> int:
    if field.kind is _INT:
        if not isinstance(value, int):
            raise ValueError(f"{field.name}: expected an int, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{field.name}: expected a string, got {value!r}")
    if field.kind is _MAC:
        return int(_check_mac(field.name, value).replace(":", ""), 16)
    fast = _ipv4_int(value)
    return int(ipaddress.IPv4Address(value)) if fast is None else fast


def _ipv4_int(text: str) -> int | None:
    """The value of a canonical dotted quad, or ``None`` for anything else.

    why: ``ipaddress`` costs ~10x more and the flow compiler converts every
    pod address; a string that survives inet_aton/inet_ntoa unchanged is
    exactly a dotted quad ``ipaddress`` accepts, with the same value.
    """
    try:
        packed = socket.inet_aton(text)
    except (OSError, ValueError):
        return None
    return int.from_bytes(packed, "big") if socket.inet_ntoa(packed) == text else None


def from_int(name: str, value: int) -> FieldValue:
    """Convert an int back to the normalized value form of field ``name``."""
    return _from_int(info(name), value)


def _from_int(field: FieldInfo, value: int) -> FieldValue:
    if field.kind is _INT:
        return value
    if field.kind is _MAC:
        raw = f"{value:012x}"
        return ":".join(raw[i : i + 2] for i in range(0, 12, 2))
    return socket.inet_ntoa(value.to_bytes(4, "big"))


def normalize(
    name: str, value: FieldValue, mask: FieldValue | None = None
) -> tuple[FieldValue, FieldValue | None]:
    """Validate and normalize one (value, mask) pair of field ``name``.

    Returns the canonical ``(value, mask)``; ``mask`` is ``None`` for an exact
    match. Raises ``ValueError`` naming the field on a bad value.
    """
    field = info(name)
    if field.kind is _V4 and isinstance(value, str):
        fast = _normalize_ipv4(value, mask)
        if fast is not None:
            return fast
        if "/" in value:
            if mask is not None:
                raise ValueError(f"{name}: give either a prefix or a mask, not both")
            net = ipaddress.IPv4Network(value, strict=False)
            value, mask = str(net.network_address), str(net.netmask)
    full = (1 << field.bits) - 1
    int_value = _to_int(field, value)
    int_mask = full if mask is None else _to_int(field, mask)
    if not 0 <= int_value <= full or not 0 <= int_mask <= full:
        raise ValueError(f"{name}: value {value!r} or mask {mask!r} out of range")
    if int_mask == full:
        return _from_int(field, int_value), None
    return _from_int(field, int_value & int_mask), _from_int(field, int_mask)


def _normalize_ipv4(text: str, mask: FieldValue | None) -> tuple[str, str | None] | None:
    """``normalize`` of a canonical ``a.b.c.d`` or ``a.b.c.d/len`` without a mask, else None.

    why: pod addresses and CIDRs are nearly every IPv4 value the compiler sees;
    this answers them without ``ipaddress`` or int round trips. ``None`` sends
    everything else (masks, odd spellings, errors) down the general path.
    """
    if mask is not None:
        return None
    address, slash, length = text.partition("/")
    value = _ipv4_int(address)
    if value is None:
        return None
    if not slash:
        return text, None
    if not (length.isdigit() and length.isascii() and str(int(length)) == length):
        return None
    bits = int(length)
    if bits > 32:
        return None
    if bits == 32:
        return address, None
    netmask = ((1 << 32) - 1) ^ ((1 << (32 - bits)) - 1)
    network = socket.inet_ntoa((value & netmask).to_bytes(4, "big"))
    return network, socket.inet_ntoa(netmask.to_bytes(4, "big"))


def _check_mac(name: str, value: str) -> str:
    lowered = value.lower()
    if not _MAC_RE.match(lowered):
        raise ValueError(f"{name}: {value!r} is not a MAC address")
    return lowered


def prefix_len(mask: str) -> int | None:
    """Return the prefix length of a dotted IPv4 mask, or ``None`` if not a prefix."""
    bits = int(ipaddress.IPv4Address(mask))
    length = bin(bits).count("1")
    return length if bits == ((1 << 32) - 1) ^ ((1 << (32 - length)) - 1) else None


# --- OXM TLVs on the wire --------------------------------------------------------


@dataclass(frozen=True)
class WireField:
    """How one field travels as an OXM TLV: 32-bit header, value width, TLV order."""

    header: int  # exact-match header; the masked one sets bit 8 and doubles the length
    nbytes: int
    order: int  # os-ken's OFPMatch sorts TLVs by (class << 7 | field); we send the same

    @property
    def header_w(self) -> int:
        """The header of a masked TLV."""
        return (self.header & ~0xFF) | 0x100 | (2 * self.nbytes)


def _wire(name: str) -> WireField:
    oxm_class, oxm_field = _WIRE_IDS[name]
    nbytes = FIELDS[name].bits // 8
    return WireField(
        (oxm_class << 16) | (oxm_field << 9) | nbytes, nbytes, oxm_class << 7 | oxm_field
    )


WIRE: Final[dict[str, WireField]] = {name: _wire(name) for name in FIELDS}


def _int_bytes(nbytes: int) -> Callable[[int], bytes]:
    return lambda value: value.to_bytes(nbytes, "big")


def _mac_bytes(value: str) -> bytes:
    return bytes.fromhex(value.replace(":", ""))


def _converter(field: FieldInfo) -> Callable[[FieldValue], bytes]:
    """Normalized value -> wire bytes (IPv4 values are canonical dotted quads)."""
    if field.kind is _INT:
        return cast(Callable[[FieldValue], bytes], _int_bytes(field.bits // 8))
    return cast(
        Callable[[FieldValue], bytes], _mac_bytes if field.kind is _MAC else socket.inet_aton
    )


# per field: (TLV order, exact header bytes, masked header bytes, value -> bytes)
_TLV: Final = {
    name: (
        w.order,
        w.header.to_bytes(4, "big"),
        w.header_w.to_bytes(4, "big"),
        _converter(FIELDS[name]),
    )
    for name, w in WIRE.items()
}


def encode_tlv(name: str, value: FieldValue, mask: FieldValue | None = None) -> bytes:
    """One OXM TLV (header, value, mask if any) of a normalized (value, mask) of ``name``."""
    _order, hdr, hdr_w, to_bytes = _TLV[name]
    if mask is None:
        return hdr + to_bytes(value)
    return hdr_w + to_bytes(value) + to_bytes(mask)


def encode_match(match: Iterable[tuple[str, FieldValue, FieldValue | None]]) -> bytes:
    """The OXM TLVs of a normalized match (``Flow.match``), without header or padding.

    Byte for byte what os-ken's ``OFPMatch(...).serialize`` writes after its
    4-byte ``ofp_match`` header: TLVs sorted by OXM class and field.
    """
    return b"".join([tlv for _order, tlv in sorted(map(_ordered_tlv, match))])


@lru_cache(maxsize=1 << 14)
def _ordered_tlv(item: tuple[str, FieldValue, FieldValue | None]) -> tuple[int, bytes]:
    # why: flows share match items (the IR hands out one object per normalized
    # item), so most TLVs are encoded once per sync, not once per flow.
    name, value, mask = item
    return _TLV[name][0], encode_tlv(name, value, mask)
