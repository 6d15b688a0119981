"""The CNI's pod port as one raw OVSDB transaction (see ovsdb.rpc for why).

The transaction checks, inside OVSDB, what the IDL-thread command checks on the
replica: the bridge exists, the port name is free, the chosen ``ofport_request``
is free. The replica may lag behind the server by a moment, so a number chosen
here stays reserved in this process for a while, and a check that fails only
means "look again": the replica catches up and the choice is made again.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

from ovsdbapp.backend.ovs_idl import idlutils

from ovsdb import rpc, schema
from ovsdb.commands import holds_port
from ovsdb.connection import OvsdbClient
from ovsdb.errors import BridgeMissing, OfportRangeExhausted, OvsdbError, OvsdbTimeout, PortConflict

# why: long enough for the IDL replica to show a committed port, after which the
# replica itself keeps its number from being chosen again.
RESERVATION_S = 30.0
_RETRY_PAUSE_S = 0.005
_BUMP_NEXT_CFG = ["next_cfg", "+=", 1]
_BRIDGE_CHECK, _NAME_CHECK, _OFPORT_CHECK = 0, 1, 2


class _Reservations:
    """ofport numbers handed out here that the replica may not show yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until: dict[int, float] = {}

    def take(self, used: set[int], low: int, high: int) -> int:
        """The lowest number in [low, high] neither used nor reserved; reserve it."""
        now = time.monotonic()
        with self._lock:
            self._until = {n: t for n, t in self._until.items() if t > now and n not in used}
            for number in range(low, high + 1):
                if number not in used and number not in self._until:
                    self._until[number] = now + RESERVATION_S
                    return number
        raise OfportRangeExhausted(low, high)

    def release(self, number: int) -> None:
        """Forget a reservation whose transaction did not commit."""
        with self._lock:
            self._until.pop(number, None)


_RESERVATIONS: weakref.WeakKeyDictionary[OvsdbClient, _Reservations] = weakref.WeakKeyDictionary()
_RESERVATIONS_LOCK = threading.Lock()


def _reservations(client: OvsdbClient) -> _Reservations:
    with _RESERVATIONS_LOCK:
        return _RESERVATIONS.setdefault(client, _Reservations())


def commit_pod_port(
    client: OvsdbClient,
    bridge: str,
    name: str,
    ids: Mapping[str, str],
    ofport_range: tuple[int, int],
    timeout: float,
) -> None:
    """Insert Port+Interface ``name`` (a veth) on ``bridge`` with ``ids``; bump next_cfg.

    An existing port ``name`` of the same container is kept as is (may-exist).
    Raises PortConflict, BridgeMissing, OfportRangeExhausted, OvsdbError,
    OvsdbTimeout, OvsdbUnavailable.
    """
    deadline = time.monotonic() + timeout
    reservations = _reservations(client)
    while True:
        if _exists(client, bridge, name, ids[schema.CONTAINER_ID]):
            return
        ofport = reservations.take(client.used_ofports(), *ofport_range)
        try:
            results = client.transact(_ops(bridge, name, ids, ofport), deadline - time.monotonic())
        except BaseException:
            reservations.release(ofport)
            raise
        failed = rpc.first_error(results)
        if failed is None:
            return
        index, error = failed
        if index != _OFPORT_CHECK:  # why: a number taken behind our back stays reserved
            reservations.release(ofport)
        if index == _BRIDGE_CHECK:
            raise BridgeMissing(bridge)
        if index not in (_NAME_CHECK, _OFPORT_CHECK):
            raise OvsdbError(reason=f"adding port {name}: {error}")
        if time.monotonic() + _RETRY_PAUSE_S > deadline:
            raise OvsdbTimeout(f"adding port {name} ({error})", timeout)
        time.sleep(_RETRY_PAUSE_S)  # why: let the replica catch up with the server


def _exists(client: OvsdbClient, bridge: str, name: str, container_id: str) -> bool:
    """True if port ``name`` of this container is on ``bridge``; PortConflict if
    ``name`` is taken otherwise (replica view)."""
    with client.cache():
        port = idlutils.row_by_value(client.api.idl, "Port", "name", name, None)
        if port is None:
            return False
        holder = idlutils.row_by_value(client.api.idl, "Bridge", "name", bridge, None)
        if holder is None or not holds_port(holder, port):
            raise PortConflict(name, f"it already exists on another bridge than {bridge}")
        if len(port.interfaces) != 1:
            raise PortConflict(name, f"it already exists with {len(port.interfaces)} interfaces")
        theirs = port.interfaces[0].external_ids.get(schema.CONTAINER_ID)
        if theirs != container_id:
            raise PortConflict(name, f"it already exists for container {theirs!r}")
        return True


def _wait(table: str, where: list[Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """An operation that fails unless the rows matching ``where`` are exactly ``rows``."""
    return {
        "op": "wait",
        "table": table,
        "where": where,
        "columns": ["name"],
        "until": "==",
        "rows": rows,
        "timeout": 0,
    }


def _ops(bridge: str, name: str, ids: Mapping[str, str], ofport: int) -> list[dict[str, Any]]:
    """The transaction; the first three operations are the checks (see _*_CHECK)."""
    id_map = ["map", sorted(ids.items())]
    return [
        _wait("Bridge", [["name", "==", bridge]], [{"name": bridge}]),
        _wait("Port", [["name", "==", name]], []),
        _wait("Interface", [["ofport_request", "==", ofport]], []),
        {
            "op": "insert",
            "table": "Interface",
            "uuid-name": "iface",
            "row": {"name": name, "type": "", "ofport_request": ofport, "external_ids": id_map},
        },
        {
            "op": "insert",
            "table": "Port",
            "uuid-name": "port",
            "row": {"name": name, "interfaces": ["named-uuid", "iface"], "external_ids": id_map},
        },
        {
            "op": "mutate",
            "table": "Bridge",
            "where": [["name", "==", bridge]],
            "mutations": [["ports", "insert", ["set", [["named-uuid", "port"]]]]],
        },
        {
            "op": "mutate",
            "table": "Open_vSwitch",
            "where": [],
            "mutations": [_BUMP_NEXT_CFG],
        },
    ]


def delete_port(client: OvsdbClient, name: str, timeout: float) -> bool:
    """Drop Port ``name`` (and so its Interfaces) from every bridge; bump next_cfg.

    Returns whether it existed. Both round trips go to the server on the plain
    connection, so a port just committed there by ``commit_pod_port`` is found
    even before the IDL replica shows it.
    """
    deadline = time.monotonic() + timeout
    where = [["name", "==", name]]
    select = {"op": "select", "table": "Port", "where": where, "columns": ["_uuid"]}
    rows = client.transact([select], timeout)[0].get("rows") or []
    if not rows:
        return False
    port = rows[0]["_uuid"]
    # why: Port rows are not root rows; dropping the Bridge's reference removes the
    # Port, and with it the Interfaces only it referenced.
    ops = [
        {
            "op": "mutate",
            "table": "Bridge",
            "where": [["ports", "includes", port]],
            "mutations": [["ports", "delete", port]],
        },
        {"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [_BUMP_NEXT_CFG]},
    ]
    results = client.transact(ops, max(deadline - time.monotonic(), 0.001))
    failed = rpc.first_error(results)
    if failed is not None:
        raise OvsdbError(reason=f"deleting port {name}: {failed[1]}")
    return bool(results[0].get("count"))
