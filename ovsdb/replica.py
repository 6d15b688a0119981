"""The IDL replica's side of OvsdbClient: what is replicated, and row notifications.

``WatchingIdl`` is the python-ovs IDL the client's owner thread runs. Besides
applying updates it forwards row changes to per-table callbacks (as snapshots,
built from the changed columns only), and tracks what the CNI's fast path
needs: ``cur_cfg``/``next_cfg`` (has ovs-vswitchd caught up?) and the ofport
numbers every Interface holds or requests.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ovsdbapp.backend.ovs_idl import connection as app_conn
from ovsdbapp.backend.ovs_idl import idlutils

from ovsdb import jsonstream, schema

LOG = logging.getLogger(__name__)

SCHEMA_NAME = "Open_vSwitch"
# why: status and counter columns that only ovs-vswitchd writes and nothing in
# Sluice reads. Replicating them costs the IDL thread on every change: vswitchd
# rewrites Interface.statistics every 5 s per port and fills in a dozen status
# columns of each new pod port right after the CNI added it (parsing, snapshots
# for watchers), on the path of the next CNI request.
_UNWATCHED_COLUMNS = {
    "Interface": {
        "statistics",
        "status",
        "admin_state",
        "link_state",
        "link_resets",
        "link_speed",
        "duplex",
        "lacp_current",
        "bfd_status",
        "cfm_fault",
        "cfm_fault_status",
        "cfm_flap_count",
        "cfm_health",
        "cfm_remote_mpids",
        "cfm_remote_opstate",
    },
    "Port": {"statistics", "status", "rstp_statistics", "rstp_status", "bond_active_slave"},
    "Bridge": {"status", "rstp_status"},
}

RowCallback = Callable[[str, dict[str, Any]], None]

jsonstream.install()


def row_snapshot(row: Any, columns: Iterable[str] | None = None) -> dict[str, Any]:
    """Copy an IDL row into a plain dict (``_uuid`` plus every replicated column).

    References become UUIDs, and optional scalars (``ofport``, ``error``,
    ``mac_in_use``...) become ``value | None`` instead of a 0/1-element list.
    ``columns``: copy only these (and ``_uuid``).
    """
    snap: dict[str, Any] = {"_uuid": row.uuid}
    table_columns = row._table.columns
    for name in table_columns if columns is None else columns:
        column = table_columns[name]
        value = idlutils.rows_to_uuids(getattr(row, name))
        if column.type.is_optional() and isinstance(value, list):
            value = value[0] if value else None
        snap[name] = value
    return snap


class WatchingIdl(app_conn.OvsdbIdl):
    """IDL that forwards row notifications to per-table callbacks."""

    def __init__(self, remote: str, helper: Any) -> None:
        super().__init__(remote, helper)
        self._watchers: dict[str, tuple[RowCallback, ...]] = {}
        self._watch_lock = threading.Lock()
        self.cur_cfg = 0  # Open_vSwitch.cur_cfg: the last next_cfg vswitchd applied
        self.next_cfg = 0  # Open_vSwitch.next_cfg as the replica has it
        self.cfg_changed = threading.Condition()
        self._snapshots: dict[str, dict[Any, dict[str, Any]]] = {}  # table -> uuid -> snapshot
        self.iface_ofports: dict[Any, tuple[int, ...]] = {}  # Interface uuid -> ofport(+request)
        # (container id, ifname) -> Interface uuid of the CNI's ports (OvsdbClient.pod_iface_uuid)
        self.pod_ifaces: dict[tuple[str, str], Any] = {}
        self._resync_callbacks: tuple[Callable[[], None], ...] = ()
        self._monitored_session: int | None = None  # session seqno whose dump we have

    def add_resync_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (IDL thread) once the replica is whole again after a reconnect."""
        with self._watch_lock:
            self._resync_callbacks = (*self._resync_callbacks, callback)

    def run(self) -> Any:
        """``Idl.run``, then the resync callbacks if this run completed a reconnect.

        # why: a reconnect re-dumps the database as "create" events when the
        # server cannot resume the old monitor (e.g. it restarted), and rows
        # deleted meanwhile never get a "delete": watchers must re-read the replica.
        """
        changed = super().run()
        # why _last_seqno: the session's own number also moves on a disconnect;
        # the IDL's copy moves when it restarts its state machine on the new
        # session, so MONITORING with a new copy means the fresh dump is applied.
        session = self._last_seqno
        if self.state == self.IDL_S_MONITORING and session != self._monitored_session:
            first = self._monitored_session is None
            self._monitored_session = session
            if not first:
                self._resynced()
        return changed

    def _resynced(self) -> None:
        for callback in self._resync_callbacks:
            try:
                callback()
            except Exception:
                LOG.exception("OVSDB resync callback %r failed", callback)

    def cooperative_yield(self) -> None:
        """Do not yield between rows.

        # why: ovsdbapp yields with time.sleep(0) after every row of an update, for
        # green threads. With native threads that only hands the CPU away: on a
        # busy node each yield cost about a millisecond, several per CNI ADD.
        """

    def add_watcher(self, table: str, callback: RowCallback) -> None:
        with self._watch_lock:  # why: copy-on-write so notify() never sees a half-edit
            self._watchers = {**self._watchers, table: (*self._watchers.get(table, ()), callback)}
            self._snapshots.pop(table, None)

    def remove_watcher(self, table: str, callback: RowCallback) -> None:
        with self._watch_lock:
            rest = tuple(cb for cb in self._watchers.get(table, ()) if cb is not callback)
            self._watchers = {**self._watchers, table: rest}
            self._snapshots.pop(table, None)

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        if row._table.name == SCHEMA_NAME and event != "delete":
            with self.cfg_changed:
                self.cur_cfg, self.next_cfg = int(row.cur_cfg), int(row.next_cfg)
                self.cfg_changed.notify_all()
        elif row._table.name == "Interface":
            self._track_ofports(event, row, updates)
            self._track_pod_iface(event, row, updates)
        callbacks = self._watchers.get(row._table.name)
        if not callbacks:
            return
        snap = self._snapshot(event, row, updates)
        for callback in callbacks:
            # why: an exception escaping notify() aborts idl.run() half-way and
            # leaves the replica out of sync with the server.
            try:
                callback(event, dict(snap))
            except Exception:
                LOG.exception("OVSDB watch callback %r failed on %s %s", callback, event, snap)

    def _track_ofports(self, event: str, row: Any, updates: Any) -> None:
        """Keep ``iface_ofports`` current: the numbers each Interface holds or requests."""
        if event == "delete":
            self.iface_ofports.pop(row.uuid, None)
            return
        changed = getattr(updates, "_data", None) if event == "update" else None
        if changed is None or "ofport" in changed or "ofport_request" in changed:
            self.iface_ofports[row.uuid] = (*row.ofport, *row.ofport_request)

    def _track_pod_iface(self, event: str, row: Any, updates: Any) -> None:
        """Keep ``pod_ifaces`` current from the rows' CNI external_ids.

        # why: finding a pod's port by scanning 1000 Interface rows converted every
        # row's external_ids under the replica lock (~130 ms per CNI DEL or CHECK).
        """
        if event == "delete":
            key = pod_key(row.external_ids)
            if key is not None and self.pod_ifaces.get(key) == row.uuid:
                del self.pod_ifaces[key]
            return
        changed = getattr(updates, "_data", None) if event == "update" else None
        if changed is not None and "external_ids" not in changed:
            return
        if changed is not None:
            old = pod_key(updates.external_ids)
            if old is not None and self.pod_ifaces.get(old) == row.uuid:
                del self.pod_ifaces[old]
        key = pod_key(row.external_ids)
        if key is not None:
            self.pod_ifaces[key] = row.uuid

    def _snapshot(self, event: str, row: Any, updates: Any) -> dict[str, Any]:
        """``row_snapshot(row)``, copying only the columns an update changed.

        # why: copying all ~40 columns of an Interface row through the IDL was most
        # of the IDL thread's work per pod port, and ovs-vswitchd updates each new
        # port's row several times (ofport, status, link state...). An update's
        # ``updates`` row holds exactly the changed columns' old values.
        """
        cache = self._snapshots.setdefault(row._table.name, {})
        if event == "delete":
            return cache.pop(row.uuid, None) or row_snapshot(row)
        previous = cache.get(row.uuid)
        changed = getattr(updates, "_data", None) if event == "update" else None
        if previous is None or changed is None:
            snap = row_snapshot(row)
            if len(cache) > 2 * len(row._table.rows) + 64:  # rows gone while disconnected
                for stale in cache.keys() - row._table.rows.keys():
                    del cache[stale]
        else:
            snap = {
                **previous,
                **row_snapshot(row, [c for c in changed if c in row._table.columns]),
            }
        cache[row.uuid] = snap
        return snap


def pod_key(ids: dict[str, str]) -> tuple[str, str] | None:
    """(container id, ifname) of a port the CNI made, from its external_ids."""
    if ids.get(schema.OWNER) != schema.OWNER_CNI or schema.CONTAINER_ID not in ids:
        return None
    return ids[schema.CONTAINER_ID], ids.get(schema.IF_NAME, "")


def register_tables(helper: Any) -> None:
    """Replicate every table and column except those in ``_UNWATCHED_COLUMNS``."""
    for name, table in helper.schema_json["tables"].items():
        skip = _UNWATCHED_COLUMNS.get(name)
        if skip:
            helper.register_columns(name, [c for c in table["columns"] if c not in skip])
        else:
            helper.register_table(name)
