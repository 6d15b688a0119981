"""Command-level helpers over OvsdbClient: one OVSDB transaction per call.

Writers wait until ovs-vswitchd applied the change and then check what it made
of it: ovsdbapp only logs an interface that failed to open, these helpers
raise typed errors and remove the half-made port. ``commit_pod_port`` and
``del_port(wait_vswitchd=False)`` are the exceptions, for the CNI's ADD and DEL:
they return once OVSDB committed the change. Readers
(``find_ports``, ``bridge_exists``...) answer from the local IDL replica without
a round trip.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ovsdbapp.backend.ovs_idl import idlutils

from ovsdb import podport, schema
from ovsdb.commands import (
    AddPodPortCommand,
    DelPortCommand,
    EnsureBridgeCommand,
    EnsureFlowTableNamesCommand,
    EnsureInternalPortCommand,
    SetBridgeExternalIdsCommand,
    first_value,
    holds_port,
)
from ovsdb.connection import OvsdbClient
from ovsdb.errors import BridgeMissing, OvsdbError, PortAddFailed
from ovsdb.replica import pod_key

USERSPACE_TSO_KEY = "userspace-tso-enable"


@dataclass(frozen=True)
class PortRecord:
    """A port as read from the replica. ``ofport`` is None until vswitchd assigns one,
    -1 (with ``error`` saying why) when vswitchd could not open the interface;
    ``ofport_request`` is the number asked for (None if none)."""

    name: str
    ofport: int | None
    external_ids: Mapping[str, str] = field(default_factory=dict)
    mac_in_use: str | None = None
    bridge: str | None = None
    error: str | None = None
    ofport_request: int | None = None


def add_pod_port(
    client: OvsdbClient,
    bridge: str,
    name: str,
    external_ids: Mapping[str, str],
    ofport_range: tuple[int, int] = (schema.POD_OFPORT_MIN, schema.POD_OFPORT_MAX),
    timeout: float | None = None,
    *,
    iface_type: str = "",
    may_exist: bool = True,
) -> int:
    """Attach host interface ``name`` to ``bridge`` as a pod port; return its ofport.

    One transaction inserts Port+Interface with ``external_ids`` (``OWNER``
    defaults to ``OWNER_CNI``; ``CONTAINER_ID`` is required) and an
    ``ofport_request`` equal to the lowest number in ``ofport_range`` that no
    Interface uses or requests, chosen on the IDL thread so concurrent callers
    never collide. Returns after ovs-vswitchd applied it. ``iface_type`` is the
    Interface type ("" for a veth, "internal" for a TAP made by OVS).

    With ``may_exist``, an existing port ``name`` with the same container id is
    returned as is.

    Raises:
        PortConflict: the name is taken by another container (or may_exist=False).
        PortAddFailed: vswitchd could not open it (the port is deleted again).
        BridgeMissing, OfportRangeExhausted, OvsdbError.
        OvsdbTimeout: the port may still appear later; a retry with the same
            container id is idempotent and DEL removes it.
    """
    cmd = _pod_port_command(client, bridge, name, external_ids, ofport_range, iface_type, may_exist)
    return _commit_port(client, cmd, name, timeout)


def commit_pod_port(
    client: OvsdbClient,
    bridge: str,
    name: str,
    external_ids: Mapping[str, str],
    ofport_range: tuple[int, int] = (schema.POD_OFPORT_MIN, schema.POD_OFPORT_MAX),
    timeout: float | None = None,
) -> None:
    """``add_pod_port`` (veth, may exist) that returns once OVSDB committed the port.

    ovs-vswitchd opens the interface and assigns its ofport afterwards; an
    interface it cannot open gets ofport -1 and ``error`` (see ``find_pod_port``,
    ``OvsdbClient.wait_vswitchd``). OVSDB's own refusals raise as in ``add_pod_port``.
    The transaction goes on its own connection when the remote allows it
    (ovsdb.podport), else through the IDL.
    """
    if client.can_transact:
        ids = _pod_ids(external_ids)
        podport.commit_pod_port(client, bridge, name, ids, ofport_range, timeout or client.timeout)
        return
    cmd = _pod_port_command(client, bridge, name, external_ids, ofport_range, "", True)
    with client.transaction(timeout=timeout, wait_vswitchd=False, bump_cfg=True) as txn:
        txn.add(cmd)


def _pod_ids(external_ids: Mapping[str, str]) -> dict[str, str]:
    if schema.CONTAINER_ID not in external_ids:
        raise ValueError(f"external_ids must contain {schema.CONTAINER_ID!r}")
    return {schema.OWNER: schema.OWNER_CNI, **external_ids}


def _pod_port_command(
    client: OvsdbClient,
    bridge: str,
    name: str,
    external_ids: Mapping[str, str],
    ofport_range: tuple[int, int],
    iface_type: str,
    may_exist: bool,
) -> AddPodPortCommand:
    ids = _pod_ids(external_ids)
    return AddPodPortCommand(
        client.api, bridge, name, ids, iface_type, ofport_range, may_exist=may_exist
    )


def ensure_internal_port(
    client: OvsdbClient,
    bridge: str,
    name: str,
    ofport_request: int,
    mac: str | None = None,
    external_ids: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> int:
    """Create (or update in place) internal port ``name`` on ``bridge``; return its ofport.

    ``mac`` sets Interface.mac; ``external_ids`` keys are merged. Raises
    PortAddFailed if vswitchd cannot open it or gives it another number than
    ``ofport_request`` (a port created by this call is deleted again),
    PortConflict if ``name`` exists on another bridge, BridgeMissing.
    """
    cmd = EnsureInternalPortCommand(
        client.api, bridge, name, ofport_request, mac, external_ids or {}
    )
    ofport = _commit_port(client, cmd, name, timeout)
    if ofport != ofport_request:
        if cmd.created:
            del_port(client, name, timeout=timeout)
        raise PortAddFailed(name, f"got ofport {ofport}, requested {ofport_request}")
    return ofport


def _commit_port(client: OvsdbClient, cmd: Any, name: str, timeout: float | None) -> int:
    """Commit a port command; return the ofport or undo a new port and raise PortAddFailed."""
    with client.transaction(timeout=timeout) as txn:
        txn.add(cmd)
    ofport, error = _iface_state(client, cmd.iface_uuid)
    if ofport is not None and ofport > 0:
        return ofport
    if error:
        reason = error
    elif not txn.vswitchd_applied:
        reason = "ovs-vswitchd did not apply the change in time"
    else:
        reason = f"ovs-vswitchd assigned ofport {ofport}"
    if cmd.created:
        del_port(client, name, timeout=timeout)
    raise PortAddFailed(name, reason)


def _iface_state(client: OvsdbClient, iface_uuid: uuid.UUID) -> tuple[int | None, str | None]:
    with client.cache() as tables:
        iface = tables["Interface"].rows.get(iface_uuid)
        if iface is None:
            return None, "the Interface row vanished"
        return first_value(iface.ofport), first_value(iface.error)


def del_port(
    client: OvsdbClient,
    name: str,
    if_exists: bool = True,
    timeout: float | None = None,
    wait_vswitchd: bool = True,
) -> bool:
    """Delete port ``name`` from its bridge; return whether it existed.

    With ``wait_vswitchd`` (the default) it returns once ovs-vswitchd removed it
    (its TAP or datapath port is gone); without, once OVSDB committed the removal
    (``next_cfg`` is bumped, so a later ``client.wait_vswitchd()`` covers it).
    Raises PortMissing if it does not exist and ``if_exists`` is False.
    """
    cmd = DelPortCommand(client.api, name, if_exists)
    with client.transaction(timeout=timeout, wait_vswitchd=wait_vswitchd, bump_cfg=True) as txn:
        txn.add(cmd)
    return bool(cmd.result)


def find_ports(client: OvsdbClient, **external_id_filters: str) -> list[PortRecord]:
    """Interfaces whose external_ids contain every given key/value, from the replica.

    Keys with dashes go through a dict: ``find_ports(c, **{schema.OWNER: "cni"})``.
    Sorted by name.
    """
    records = []
    with client.cache() as tables:
        bridge_of = {
            iface.uuid: br.name
            for br in tables["Bridge"].rows.values()
            for port in br.ports
            for iface in port.interfaces
        }
        for iface in tables["Interface"].rows.values():
            ids = iface.external_ids
            if all(ids.get(k) == v for k, v in external_id_filters.items()):
                records.append(_record(iface, bridge_of.get(iface.uuid)))
    return sorted(records, key=lambda r: r.name)


def _record(iface: Any, bridge: str | None) -> PortRecord:
    return PortRecord(
        name=iface.name,
        ofport=first_value(iface.ofport),
        external_ids=dict(iface.external_ids),
        mac_in_use=first_value(iface.mac_in_use),
        bridge=bridge,
        error=first_value(iface.error),
        ofport_request=first_value(iface.ofport_request),
    )


def find_pod_port(client: OvsdbClient, container_id: str, if_name: str) -> PortRecord | None:
    """The Sluice CNI port of (``container_id``, ``if_name``), or None.

    Looked up in the client's index of CNI ports, then checked against the row.
    """
    iface_uuid = client.pod_iface_uuid(container_id, if_name)
    with client.cache() as tables:
        iface = tables["Interface"].rows.get(iface_uuid) if iface_uuid is not None else None
        if iface is None:
            return None
        if pod_key(iface.external_ids) != (container_id, if_name):
            return None
        return _record(iface, _bridge_of_port(client, tables, iface.name))


def _bridge_of_port(client: OvsdbClient, tables: dict[str, Any], name: str) -> str | None:
    """Name of the bridge holding Port ``name`` (caller holds ``client.cache()``)."""
    port = idlutils.row_by_value(client.api.idl, "Port", "name", name, None)
    if port is None:
        return None
    for br in tables["Bridge"].rows.values():
        if holds_port(br, port):
            return str(br.name)
    return None


def bridge_exists(client: OvsdbClient, name: str) -> bool:
    """Whether bridge ``name`` is in the replica."""
    return _bridge_row_value(client, name, "name", default=None) is not None


def ensure_bridge(
    client: OvsdbClient,
    name: str,
    datapath_type: str,
    fail_mode: str = "secure",
    protocols: Sequence[str] = ("OpenFlow13",),
    controller: str | None = None,
    other_config: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> None:
    """Create bridge ``name`` or bring it in line; waits for ovs-vswitchd.

    Sets datapath_type (changing it on an existing bridge makes vswitchd
    recreate the datapath), fail_mode and protocols; merges ``other_config``
    keys; sets the single controller target when given (kept if unchanged).
    """
    columns = {"datapath_type": datapath_type, "fail_mode": fail_mode, "protocols": list(protocols)}
    cmd = EnsureBridgeCommand(client.api, name, columns, other_config or {}, controller)
    with client.transaction(timeout=timeout) as txn:
        txn.add(cmd)


def datapath_types(client: OvsdbClient) -> list[str]:
    """Open_vSwitch.datapath_types as reported by the running ovs-vswitchd."""
    with client.cache() as tables:
        return sorted(_ovs_row(tables).datapath_types)


def userspace_tso_enabled(client: OvsdbClient) -> bool:
    """Whether ``other_config:userspace-tso-enable`` is "true".

    OVS reads it only when ovs-vswitchd starts; a later change needs a restart.
    """
    with client.cache() as tables:
        return bool(_ovs_row(tables).other_config.get(USERSPACE_TSO_KEY) == "true")


def bridge_datapath_type(client: OvsdbClient, bridge: str) -> str:
    """Bridge.datapath_type ("" means the default, "system"). Raises BridgeMissing."""
    return str(_bridge_row_value(client, bridge, "datapath_type"))


def get_bridge_external_ids(client: OvsdbClient, bridge: str) -> dict[str, str]:
    """A copy of Bridge.external_ids. Raises BridgeMissing."""
    return dict(_bridge_row_value(client, bridge, "external_ids"))


def set_bridge_external_ids(
    client: OvsdbClient, bridge: str, external_ids: Mapping[str, str], timeout: float | None = None
) -> None:
    """Merge keys into Bridge.external_ids (others kept). Does not wait for vswitchd."""
    cmd = SetBridgeExternalIdsCommand(client.api, bridge, external_ids)
    with client.transaction(timeout=timeout, wait_vswitchd=False) as txn:
        txn.add(cmd)


_MISSING: Any = object()


def _bridge_row_value(
    client: OvsdbClient, bridge: str, column: str, default: Any = _MISSING
) -> Any:
    with client.cache() as tables:
        for br in tables["Bridge"].rows.values():
            if br.name == bridge:
                value = getattr(br, column)
                return dict(value) if isinstance(value, dict) else value
    if default is _MISSING:
        raise BridgeMissing(bridge)
    return default


def _ovs_row(tables: Mapping[str, Any]) -> Any:
    for row in tables["Open_vSwitch"].rows.values():
        return row
    raise OvsdbError(reason="the Open_vSwitch table is empty (run `ovs-vsctl init`)")


def ensure_flow_table_names(
    client: OvsdbClient, bridge: str, names: Mapping[int, str], timeout: float | None = None
) -> bool:
    """Name ``bridge``'s OpenFlow tables (``{table id: name}``); True if anything changed."""
    cmd = EnsureFlowTableNamesCommand(client.api, bridge, names)
    with client.transaction(timeout=timeout, wait_vswitchd=False) as txn:
        txn.add(cmd)
    return bool(cmd.result)
