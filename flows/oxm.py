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
from dataclasses import dataclass
from typing import Final

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
    field = info(name)
    if field.kind is Kind.INT:
        if not isinstance(value, int):
            raise ValueError(f"{name}: expected an int, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected a string, got {value!r}")
    if field.kind is Kind.MAC:
        return int(_check_mac(name, value).replace(":", ""), 16)
    return int(ipaddress.IPv4Address(value))


def from_int(name: str, value: int) -> FieldValue:
    """Convert an int back to the normalized value form of field ``name``."""
    field = info(name)
    if field.kind is Kind.INT:
        return value
    if field.kind is Kind.MAC:
        raw = f"{value:012x}"
        return ":".join(raw[i : i + 2] for i in range(0, 12, 2))
    return str(ipaddress.IPv4Address(value))


def normalize(
    name: str, value: FieldValue, mask: FieldValue | None = None
) -> tuple[FieldValue, FieldValue | None]:
    """Validate and normalize one (value, mask) pair of field ``name``.

    Returns the canonical ``(value, mask)``; ``mask`` is ``None`` for an exact
    match. Raises ``ValueError`` naming the field on a bad value.
    """
    field = info(name)
    if field.kind is Kind.IPV4 and isinstance(value, str) and "/" in value:
        if mask is not None:
            raise ValueError(f"{name}: give either a prefix or a mask, not both")
        net = ipaddress.IPv4Network(value, strict=False)
        value, mask = str(net.network_address), str(net.netmask)
    int_value = to_int(name, value)
    int_mask = full_mask(field) if mask is None else to_int(name, mask)
    if not 0 <= int_value <= full_mask(field) or not 0 <= int_mask <= full_mask(field):
        raise ValueError(f"{name}: value {value!r} or mask {mask!r} out of range")
    if int_mask == full_mask(field):
        return from_int(name, int_value), None
    return from_int(name, int_value & int_mask), from_int(name, int_mask)


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
