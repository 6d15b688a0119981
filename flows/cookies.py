"""The only place that mints and reads flow cookies.

Layout of the 64-bit cookie (after antrea's ``cookie/allocator.go``)::

    bits 63..48  round      16 bits, 1..65535; bumped on every controller start
    bits 47..40  category   8 bits, ``Category``; 0 is never used by Sluice
    bits 39..32  table      8 bits: the OpenFlow table id of the flow
    bits 31..0   object id  32 bits: pod ofport, gateway ofport, node-name hash, 0

Who sets which bits: builders mint one cookie per object with ``make`` (table
bits 0) and hand it to every ``Flow`` of that object; ``Flow.__post_init__``
(``flows.ir``) then stamps the flow's own table id with ``with_table`` into any
non-zero cookie. So every Sluice flow's cookie names its table, and
(cookie, priority, match) is unique across all tables: a cookie-filtered
message that reaches more than one table (``flows.ofmsg.recookie_flow``'s
Nicira flow-mod if it were sent with table 0xff, a dump read without table
numbers) still names exactly one flow.

Restart sequence (controller's job): bump the round kept in the Bridge's
``external_ids`` (``ovsdb.schema.FLOW_ROUND``), move every unchanged flow to the
new round in place (``ofmsg.recookie_flow``: counters and duration keep
running), add the missing ones, and once converged delete the old round with
``round_cookie(old)`` and ``round_mask()``. At most two rounds exist and
traffic never stops.

Round 0 is refused: flows Sluice did not make (e.g. the NORMAL flow OVS puts
on a new bridge) carry cookie 0, so a round-0 delete would hit them and a
round-0 flow could not be told apart from them.

Object-id collisions: remote nodes use CRC-32 of the node name. Two names can
share an id; that is harmless because cookies are only used to delete whole
rounds (mask = round bits), to read dumps, and as an extra filter next to the
exact priority and match of ``recookie_flow`` (within one table, priority and
match alone already name one flow). Flows are never deleted by object id -
per-object deletes are strict deletes of the exact flows (``flows.diff``).
"""

from __future__ import annotations

import enum
import zlib
from typing import Final

ROUND_BITS: Final = 16
CATEGORY_BITS: Final = 8
TABLE_BITS: Final = 8
OBJECT_BITS: Final = 32
ROUND_SHIFT: Final = 48
CATEGORY_SHIFT: Final = 40
TABLE_SHIFT: Final = 32
TABLE_MASK: Final = ((1 << TABLE_BITS) - 1) << TABLE_SHIFT
MAX_TABLE: Final = 254  # OFPTT_MAX; 255 is OFPTT_ALL
MAX_ROUND: Final = (1 << ROUND_BITS) - 1


class Category(enum.IntEnum):
    """What kind of object a flow belongs to (cookie bits 47..40)."""

    PIPELINE = 1  # table-miss flows and fixed per-node flows; object id 0
    GATEWAY = 2  # gw0 flows; object id = gateway ofport
    POD = 3  # one pod interface; object id = its ofport
    REMOTE_NODE = 4  # one remote node; object id = node_object_id(name)
    POLICY = 5  # NetworkPolicy; object id = name_object_id(rule key), pod ofport, or 0
    SERVICE = 6  # Services (later)


def make(round_: int, category: Category, obj_id: int) -> int:
    """Return the cookie for ``obj_id`` of ``category`` installed in ``round_``.

    The table bits are 0: ``Flow`` stamps its table into them (``with_table``).
    Raises ``ValueError`` if the round is not 1..65535 or the id not 32 bits.
    """
    _check_round(round_)
    if not 0 <= obj_id < (1 << OBJECT_BITS):
        raise ValueError(f"cookie object id {obj_id} does not fit {OBJECT_BITS} bits")
    return (round_ << ROUND_SHIFT) | (int(Category(category)) << CATEGORY_SHIFT) | obj_id


def with_table(cookie: int, table_id: int) -> int:
    """Return ``cookie`` with its table bits (39..32) replaced by ``table_id``.

    Raises ``ValueError`` if ``table_id`` is not 0..254.
    """
    if not 0 <= table_id <= MAX_TABLE:
        raise ValueError(f"table id {table_id} not in 0..{MAX_TABLE}")
    return (cookie & ~TABLE_MASK) | (table_id << TABLE_SHIFT)


def table_of(cookie: int) -> int:
    """Return the table id encoded in ``cookie``."""
    return (cookie & TABLE_MASK) >> TABLE_SHIFT


def round_mask() -> int:
    """Return the cookie mask that selects the round bits."""
    return MAX_ROUND << ROUND_SHIFT


def round_cookie(round_: int) -> int:
    """Return the cookie value to pair with ``round_mask()`` to select ``round_``."""
    _check_round(round_)
    return round_ << ROUND_SHIFT


def round_of(cookie: int) -> int:
    """Return the round encoded in ``cookie``."""
    return (cookie >> ROUND_SHIFT) & MAX_ROUND


def category_of(cookie: int) -> Category:
    """Return the category encoded in ``cookie``; ``ValueError`` if not Sluice's."""
    return Category((cookie >> CATEGORY_SHIFT) & ((1 << CATEGORY_BITS) - 1))


def object_of(cookie: int) -> int:
    """Return the object id encoded in ``cookie``."""
    return cookie & ((1 << OBJECT_BITS) - 1)


def next_round(round_: int) -> int:
    """Return the round after ``round_``, wrapping 65535 to 1 (never 0)."""
    _check_round(round_)
    return 1 if round_ == MAX_ROUND else round_ + 1


def node_object_id(name: str) -> int:
    """Return a stable 32-bit object id for a node name (CRC-32; see module doc)."""
    return name_object_id(name)


def name_object_id(name: str) -> int:
    """Return a stable 32-bit object id for any object name, e.g. a policy rule key (CRC-32)."""
    # why: CRC-32 is stable across processes and Python versions, unlike hash().
    return zlib.crc32(name.encode())


def _check_round(round_: int) -> None:
    if not 1 <= round_ <= MAX_ROUND:
        raise ValueError(f"flow round {round_} not in 1..{MAX_ROUND}")
