"""Sluice's OVSDB client: one ovsdbapp IDL owner thread plus port/bridge helpers."""

from ovsdb.connection import OvsdbClient, row_snapshot
from ovsdb.errors import (
    BridgeMissing,
    OfportRangeExhausted,
    OvsdbError,
    OvsdbTimeout,
    OvsdbUnavailable,
    PortAddFailed,
    PortConflict,
    PortMissing,
)
from ovsdb.ports import (
    PortRecord,
    add_pod_port,
    bridge_datapath_type,
    bridge_exists,
    datapath_types,
    del_port,
    ensure_bridge,
    ensure_internal_port,
    find_pod_port,
    find_ports,
    get_bridge_external_ids,
    set_bridge_external_ids,
    userspace_tso_enabled,
)

__all__ = [
    "BridgeMissing",
    "OfportRangeExhausted",
    "OvsdbClient",
    "OvsdbError",
    "OvsdbTimeout",
    "OvsdbUnavailable",
    "PortAddFailed",
    "PortConflict",
    "PortMissing",
    "PortRecord",
    "add_pod_port",
    "bridge_datapath_type",
    "bridge_exists",
    "datapath_types",
    "del_port",
    "ensure_bridge",
    "ensure_internal_port",
    "find_pod_port",
    "find_ports",
    "get_bridge_external_ids",
    "row_snapshot",
    "set_bridge_external_ids",
    "userspace_tso_enabled",
]
