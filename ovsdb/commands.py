"""ovsdbapp Command subclasses that must decide on the IDL thread.

``run_idl`` runs inside the IDL owner thread, within one OVSDB transaction, on
the replica as of that moment. That is what makes ofport allocation safe: two
callers can never both see the same number as free, because their commands run
one after the other on the same thread and the second sees the first's row.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from ovs.db import data as ovs_data
from ovs.db import types as ovs_types
from ovsdbapp.backend.ovs_idl import command, idlutils

from ovsdb import schema
from ovsdb.errors import BridgeMissing, OfportRangeExhausted, PortConflict, PortMissing


def _bridge(api: Any, name: str) -> Any:
    br = idlutils.row_by_value(api.idl, "Bridge", "name", name, None)
    if br is None:
        raise BridgeMissing(name)
    return br


def first_value(value: Any) -> Any:
    """IDL optional columns come back as 0/1-element lists."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def holds_port(br: Any, port: Any) -> bool:
    """Whether Bridge row ``br`` lists Port row ``port`` in its ports.

    # why: ``port in br.ports`` builds and sorts a Row list of every port (~45 ms
    # with 1000 ports on the bridge); the column's datum answers by hash.
    """
    return ovs_data.Atom(ovs_types.UuidType, port.uuid) in br._data["ports"].values


def set_if_changed(row: Any, column: str, value: Any) -> None:
    """Assign ``row.column = value`` unless it already holds that value."""
    # why: a row inserted in this transaction raises AttributeError for unset columns.
    current = getattr(row, column, None)
    if current is None:
        setattr(row, column, value)
        return
    if isinstance(current, list) and not isinstance(value, list):
        current = first_value(current)
    elif isinstance(current, list):
        current, value = sorted(current), sorted(value)
    if current != value:
        setattr(row, column, value)


def insert_port(txn: Any, api: Any, br: Any, name: str, iface_columns: Mapping[str, Any]) -> Any:
    """Insert Port+Interface ``name`` on ``br``; return the new Interface row."""
    iface = txn.insert(api.tables["Interface"])
    iface.name = name
    for column, value in iface_columns.items():
        setattr(iface, column, value)
    port = txn.insert(api.tables["Port"])
    port.name = name
    port.interfaces = [iface]
    if "external_ids" in iface_columns:
        port.external_ids = iface_columns["external_ids"]
    br.addvalue("ports", port)
    return iface


class _PortCommand(command.BaseCommand):
    """Shared result handling: ``iface_uuid`` is the real UUID after commit."""

    created = False
    iface_uuid: uuid.UUID | None = None

    def post_commit(self, txn: Any) -> None:
        if self.created and self.iface_uuid is not None:
            self.iface_uuid = txn.get_insert_uuid(self.iface_uuid) or self.iface_uuid
        self.result = self.iface_uuid

    def _existing(self, br: Any, name: str, owner: str | None = None) -> Any | None:
        """Return the Interface of port ``name`` if it exists and may be reused, else None.

        ``owner``: container id the existing Interface must carry (None: any).
        """
        port = idlutils.row_by_value(self.api.idl, "Port", "name", name, None)
        if port is None:
            return None
        if not holds_port(br, port):
            raise PortConflict(name, f"it already exists on another bridge than {br.name}")
        if len(port.interfaces) != 1:
            raise PortConflict(name, f"it already exists with {len(port.interfaces)} interfaces")
        iface = port.interfaces[0]
        theirs = iface.external_ids.get(schema.CONTAINER_ID)
        if owner is not None and theirs != owner:
            raise PortConflict(name, f"it already exists for container {theirs!r}")
        return iface


class AddPodPortCommand(_PortCommand):
    """Insert a pod's Port+Interface with the lowest free ``ofport_request``.

    May-exist semantics: a port with this name whose Interface carries the same
    container id is returned as is; any other owner raises PortConflict.
    """

    def __init__(
        self,
        api: Any,
        bridge: str,
        name: str,
        external_ids: Mapping[str, str],
        iface_type: str,
        ofport_range: tuple[int, int],
        may_exist: bool,
    ) -> None:
        super().__init__(api)
        self.bridge, self.name, self.iface_type = bridge, name, iface_type
        self.external_ids = dict(external_ids)
        self.ofport_range = ofport_range
        self.may_exist = may_exist

    def run_idl(self, txn: Any) -> None:
        br = _bridge(self.api, self.bridge)
        owner = self.external_ids.get(schema.CONTAINER_ID, "")
        existing = self._existing(br, self.name, owner)
        if existing is not None:
            if not self.may_exist:
                raise PortConflict(self.name, "it already exists (may_exist=False)")
            self.iface_uuid = existing.uuid
            return
        # why: our IDL thread serialises Sluice's own callers, but another OVSDB
        # client could add a port meanwhile; verifying Bridge.ports turns that
        # race into TRY_AGAIN and ovsdbapp re-runs this command on fresh data.
        br.verify("ports")
        columns = {
            "type": self.iface_type,
            "external_ids": self.external_ids,
            "ofport_request": self._free_ofport(),
        }
        self.iface_uuid = insert_port(txn, self.api, br, self.name, columns).uuid
        self.created = True

    def _free_ofport(self) -> int:
        used: set[int] = set()
        for iface in self.api.tables["Interface"].rows.values():
            used.update(iface.ofport)
            used.update(iface.ofport_request)
        low, high = self.ofport_range
        for candidate in range(low, high + 1):
            if candidate not in used:
                return candidate
        raise OfportRangeExhausted(low, high)


class EnsureInternalPortCommand(_PortCommand):
    """Create or update an internal port with a fixed ``ofport_request`` (and MAC)."""

    def __init__(
        self,
        api: Any,
        bridge: str,
        name: str,
        ofport_request: int,
        mac: str | None,
        external_ids: Mapping[str, str],
    ) -> None:
        super().__init__(api)
        self.bridge, self.name = bridge, name
        self.columns: dict[str, Any] = {"type": "internal", "ofport_request": ofport_request}
        if mac is not None:
            self.columns["mac"] = mac
        self.external_ids = dict(external_ids)

    def run_idl(self, txn: Any) -> None:
        br = _bridge(self.api, self.bridge)
        iface = self._existing(br, self.name)
        if iface is None:
            columns = {**self.columns, "external_ids": self.external_ids}
            self.iface_uuid = insert_port(txn, self.api, br, self.name, columns).uuid
            self.created = True
            return
        for column, value in self.columns.items():
            set_if_changed(iface, column, value)
        for key, value in self.external_ids.items():
            if iface.external_ids.get(key) != value:
                iface.setkey("external_ids", key, value)
        self.iface_uuid = iface.uuid


class DelPortCommand(command.BaseCommand):
    """Delete a Port and its Interfaces by name, from whichever bridge holds it."""

    def __init__(self, api: Any, name: str, if_exists: bool) -> None:
        super().__init__(api)
        self.name, self.if_exists = name, if_exists
        self.result = False

    def run_idl(self, txn: Any) -> None:
        port = idlutils.row_by_value(self.api.idl, "Port", "name", self.name, None)
        if port is None:
            if self.if_exists:
                return
            raise PortMissing(self.name)
        for br in self.api.tables["Bridge"].rows.values():
            if holds_port(br, port):
                br.delvalue("ports", port)
        for iface in port.interfaces:
            iface.delete()
        port.delete()
        self.result = True


class EnsureBridgeCommand(command.BaseCommand):
    """Create bridge ``name`` (with its LOCAL internal port) or bring its columns in line.

    ``other_config`` keys are merged, other columns replaced. The controller
    row is only replaced when its target differs (a new row would make
    ovs-vswitchd drop and reopen the OpenFlow connection).
    """

    def __init__(
        self,
        api: Any,
        name: str,
        columns: Mapping[str, Any],
        other_config: Mapping[str, str],
        controller: str | None,
    ) -> None:
        super().__init__(api)
        self.name, self.controller = name, controller
        self.columns, self.other_config = dict(columns), dict(other_config)

    def run_idl(self, txn: Any) -> None:
        br = idlutils.row_by_value(self.api.idl, "Bridge", "name", self.name, None)
        if br is None:
            br = txn.insert(self.api.tables["Bridge"])
            br.name = self.name
            self.api._ovs.addvalue("bridges", br)
            insert_port(txn, self.api, br, self.name, {"type": "internal"})
        for column, value in self.columns.items():
            set_if_changed(br, column, value)
        current = getattr(br, "other_config", {})
        for key, value in self.other_config.items():
            if current.get(key) != value:
                br.setkey("other_config", key, value)
        targets = [c.target for c in getattr(br, "controller", [])]
        if self.controller is not None and targets != [self.controller]:
            ctl = txn.insert(self.api.tables["Controller"])
            ctl.target = self.controller
            br.controller = [ctl]
        self.result = br.uuid


class SetBridgeExternalIdsCommand(command.BaseCommand):
    """Merge keys into Bridge.external_ids (other keys are kept)."""

    def __init__(self, api: Any, bridge: str, external_ids: Mapping[str, str]) -> None:
        super().__init__(api)
        self.bridge, self.external_ids = bridge, dict(external_ids)

    def run_idl(self, txn: Any) -> None:
        br = _bridge(self.api, self.bridge)
        for key, value in self.external_ids.items():
            if br.external_ids.get(key) != value:
                br.setkey("external_ids", key, value)


class EnsureFlowTableNamesCommand(command.BaseCommand):
    """Give br-int's OpenFlow tables names (``Bridge.flow_tables`` → ``Flow_Table.name``).

    # why: OVS 3.1 takes table names only from OVSDB Flow_Table rows (an OpenFlow
    # table-mod cannot set them); `ovs-ofctl --names dump-flows` then prints them.
    """

    def __init__(self, api: Any, bridge: str, names: Mapping[int, str]) -> None:
        super().__init__(api)
        self.bridge, self.names = bridge, dict(names)

    def run_idl(self, txn: Any) -> None:
        br = _bridge(self.api, self.bridge)
        current = dict(getattr(br, "flow_tables", {}))
        changed = False
        for table_id, name in self.names.items():
            row = current.get(table_id)
            if row is not None and first_value(row.name) == name:
                continue
            row = txn.insert(self.api.tables["Flow_Table"])
            row.name = name
            current[table_id] = row
            changed = True
        if changed:
            br.flow_tables = current
        self.result = changed
