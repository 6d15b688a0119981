"""OvsdbClient: one IDL owner thread over the Open_vSwitch database (ovsdbapp).

Threading model
    ovsdbapp's ``Connection`` runs one thread that owns the python-ovs IDL: it
    runs ``idl.run()``, commits queued transactions one at a time and waits for
    ovs-vswitchd to apply each one (``next_cfg``/``cur_cfg``). Every other thread
    only queues transactions (``transaction()``) or reads the replica under the
    connection lock (``cache()``).

Watching rows
    ``watch(table, cb)`` calls ``cb(event, snapshot)`` on the IDL thread for every
    row change, right after the update is applied to the replica, i.e. within
    milliseconds of the commit. Callbacks must not block and must not call back
    into this client synchronously (the IDL thread would wait on itself): hand
    the snapshot to a queue. Exceptions from callbacks are logged and dropped.

Reconnects
    If ovsdb-server goes away the IDL reconnects by itself (backoff 1 s doubling
    to 8 s). Transactions queued meanwhile retry until their timeout and then
    raise ``OvsdbUnavailable``. After a reconnect the server may resend the whole
    database: watchers then see ``create`` for rows they already knew and get
    no ``delete`` for rows removed while disconnected, so consumers must
    reconcile from ``find_ports`` rather than trust the event stream alone.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ovs import jsonrpc, poller, stream
from ovs.db import idl as ovs_idl
from ovsdbapp import exceptions as app_exc
from ovsdbapp.backend.ovs_idl import connection as app_conn
from ovsdbapp.backend.ovs_idl import idlutils
from ovsdbapp.backend.ovs_idl import transaction as app_txn
from ovsdbapp.schema.open_vswitch import impl_idl

from ovsdb.errors import OvsdbError, OvsdbTimeout, OvsdbUnavailable

LOG = logging.getLogger(__name__)

SCHEMA_NAME = "Open_vSwitch"
# why: vswitchd rewrites Interface.statistics every 5 s per port; replicating it
# would wake every Interface watcher for nothing.
_UNWATCHED_COLUMNS = {"Interface": {"statistics"}}

RowCallback = Callable[[str, dict[str, Any]], None]


def row_snapshot(row: Any) -> dict[str, Any]:
    """Copy an IDL row into a plain dict (``_uuid`` plus every replicated column).

    References become UUIDs, and optional scalars (``ofport``, ``error``,
    ``mac_in_use``...) become ``value | None`` instead of a 0/1-element list.
    """
    snap: dict[str, Any] = {"_uuid": row.uuid}
    for name, column in row._table.columns.items():
        value = idlutils.rows_to_uuids(getattr(row, name))
        if column.type.is_optional() and isinstance(value, list):
            value = value[0] if value else None
        snap[name] = value
    return snap


class _WatchingIdl(app_conn.OvsdbIdl):
    """IDL that forwards row notifications to per-table callbacks."""

    def __init__(self, remote: str, helper: Any) -> None:
        super().__init__(remote, helper)
        self._watchers: dict[str, tuple[RowCallback, ...]] = {}
        self._watch_lock = threading.Lock()

    def add_watcher(self, table: str, callback: RowCallback) -> None:
        with self._watch_lock:  # why: copy-on-write so notify() never sees a half-edit
            self._watchers = {**self._watchers, table: (*self._watchers.get(table, ()), callback)}

    def remove_watcher(self, table: str, callback: RowCallback) -> None:
        with self._watch_lock:
            rest = tuple(cb for cb in self._watchers.get(table, ()) if cb is not callback)
            self._watchers = {**self._watchers, table: rest}

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        callbacks = self._watchers.get(row._table.name)
        if not callbacks:
            return
        snap = row_snapshot(row)
        for callback in callbacks:
            # why: an exception escaping notify() aborts idl.run() half-way and
            # leaves the replica out of sync with the server.
            try:
                callback(event, snap)
            except Exception:
                LOG.exception("OVSDB watch callback %r failed on %s %s", callback, event, snap)


class VswitchdTransaction(impl_idl.OvsVsctlTransaction):
    """ovsdbapp's vsctl-style transaction that records instead of logging.

    ``wait_vswitchd``: bump ``next_cfg`` and wait for ovs-vswitchd to apply the
    change (as ovs-vsctl does). Afterwards ``vswitchd_applied`` is True, or False
    if vswitchd did not catch up within the timeout (ovsdbapp only logs that).
    """

    def __init__(
        self,
        api: Any,
        conn: Any,
        timeout: float,
        wait_vswitchd: bool = True,
        check_error: bool = True,
        log_errors: bool = False,
    ) -> None:
        super().__init__(api, conn, check_error=check_error, log_errors=log_errors)
        self.timeout = timeout  # why: impl_idl.create_transaction drops the timeout kwarg
        self.wait_vswitchd = wait_vswitchd
        self.vswitchd_applied: bool | None = None

    def pre_commit(self, txn: Any) -> None:
        if self.wait_vswitchd:
            super().pre_commit(txn)
        else:
            txn.expected_ifaces = set()

    def post_commit(self, txn: Any) -> None:
        app_txn.Transaction.post_commit(self, txn)  # the commands' own post_commit
        if not self.wait_vswitchd:
            return
        try:
            self.do_post_commit(txn)
        except impl_idl.VswitchdInterfaceAddException:
            pass  # why: callers read Interface.ofport/error themselves and raise typed errors
        except app_exc.TimeoutException:
            self.vswitchd_applied = False
            return
        self.vswitchd_applied = True


class _Api(impl_idl.OvsdbIdl):
    """ovsdbapp Open_vSwitch API bound to one connection per instance."""

    # why: ovsdbapp's Backend keeps the connection in a CLASS attribute, so a
    # second client (another OVS instance, or a reconnect after close()) would
    # silently reuse the first connection. Keep it per instance instead.
    @property
    def ovsdb_connection(self) -> Any:
        return self.__dict__.get("_own_connection")

    @ovsdb_connection.setter
    def ovsdb_connection(self, connection: Any) -> None:
        self.__dict__["_own_connection"] = connection

    def create_transaction(
        self,
        check_error: bool = True,
        log_errors: bool = False,
        timeout: float | None = None,
        wait_vswitchd: bool = True,
        **kwargs: Any,
    ) -> VswitchdTransaction:
        conn = self.ovsdb_connection
        timeout = timeout or conn.timeout
        return VswitchdTransaction(self, conn, timeout, wait_vswitchd, check_error, log_errors)


class OvsdbClient:
    """A connection to one ovsdb-server's Open_vSwitch database.

    Args:
        remote: OVSDB remote, e.g. ``unix:/run/openvswitch/db.sock``.
        timeout: default seconds for connecting and for each transaction.

    Raises:
        OvsdbUnavailable: the server could not be reached within ``timeout``.

    ``api`` is the ovsdbapp Open_vSwitch API; put its commands in
    ``transaction()``, which raises typed errors. ``cmd.execute()`` keeps
    ovsdbapp's default of logging and swallowing errors (``check_error=False``).
    """

    def __init__(self, remote: str, timeout: float = 5.0) -> None:
        self.remote = remote
        self.timeout = timeout
        deadline = time.monotonic() + timeout
        helper = ovs_idl.SchemaHelper(None, _fetch_schema(remote, timeout))
        _register_tables(helper)
        self._idl = _WatchingIdl(remote, helper)
        remaining = max(deadline - time.monotonic(), 0.1)
        self._conn = app_conn.Connection(self._idl, remaining)
        try:
            self.api: Any = _Api(self._conn)
        except app_exc.OvsdbConnectionUnavailable as exc:
            self._idl.close()
            raise OvsdbUnavailable(remote, f"no database dump within {timeout} s") from exc
        self._conn.timeout = timeout

    @contextlib.contextmanager
    def transaction(
        self, timeout: float | None = None, wait_vswitchd: bool = True
    ) -> Iterator[VswitchdTransaction]:
        """Collect commands (``txn.add(client.api.add_br(...))``) and commit them atomically.

        The commit runs on the IDL thread when the ``with`` block exits without an
        exception; then ``txn.result`` holds each command's result. With
        ``wait_vswitchd`` it returns only after ovs-vswitchd applied the change
        (see ``txn.vswitchd_applied``).

        Raises:
            OvsdbError (or a subclass raised by a command): the commit failed.
            OvsdbTimeout: no answer within ``timeout``; the transaction may still
                commit later, so follow up with an idempotent check or cleanup.
            OvsdbUnavailable: as OvsdbTimeout, while the session is down.
        """
        txn = self.api.create_transaction(
            timeout=timeout or self.timeout, wait_vswitchd=wait_vswitchd
        )
        yield txn
        try:
            txn.result = txn.commit()
        except OvsdbError:
            raise
        except app_exc.TimeoutException as exc:
            if not self.connected:
                raise OvsdbUnavailable(self.remote, "session down") from exc
            raise OvsdbTimeout(f"transaction [{txn}]", txn.timeout) from exc
        except (app_exc.OvsdbAppException, RuntimeError) as exc:
            raise OvsdbError(reason=str(exc)) from exc

    @contextlib.contextmanager
    def cache(self) -> Iterator[dict[str, Any]]:
        """Hold the IDL lock and yield the replica's tables (``tables["Interface"].rows``).

        Read quickly and copy what you need: the IDL thread waits meanwhile, and
        waits are also queued behind an in-flight transaction.
        """
        with self._conn.lock:
            yield self._idl.tables

    @property
    def connected(self) -> bool:
        """True while the session to ovsdb-server is up."""
        return bool(self._idl._session.is_connected())

    def watch(self, table: str, callback: RowCallback) -> None:
        """Call ``callback(event, row_snapshot)`` for each create/update/delete in ``table``.

        Runs on the IDL thread: the callback must return quickly and must not
        start or wait for OVSDB transactions. Events before ``watch()`` are not
        replayed; read ``cache()`` for the current state.
        """
        if table not in self._idl.tables:
            raise OvsdbError(reason=f"table {table} is not replicated")
        self._idl.add_watcher(table, callback)

    def unwatch(self, table: str, callback: RowCallback) -> None:
        """Stop calling a callback registered with ``watch()``."""
        self._idl.remove_watcher(table, callback)

    def close(self) -> None:
        """Stop the IDL thread and close the session. Idempotent."""
        self._conn.stop(timeout=self.timeout)

    def __enter__(self) -> OvsdbClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _register_tables(helper: Any) -> None:
    """Replicate every table and column except those in ``_UNWATCHED_COLUMNS``."""
    for name, table in helper.schema_json["tables"].items():
        skip = _UNWATCHED_COLUMNS.get(name)
        if skip:
            helper.register_columns(name, [c for c in table["columns"] if c not in skip])
        else:
            helper.register_table(name)


def _fetch_schema(remote: str, timeout: float) -> dict[str, Any]:
    """Fetch the Open_vSwitch schema JSON from the server, bounded by ``timeout``.

    why: ovsdbapp's fetch_schema_json blocks without a deadline on a server that
    accepts the connection but never answers.
    """
    deadline = time.monotonic() + timeout
    err, strm = stream.Stream.open_block(stream.Stream.open(remote), int(timeout * 1000))
    if err:
        raise OvsdbUnavailable(remote, _strerror(err))
    rpc = jsonrpc.Connection(strm)
    try:
        rpc.send(jsonrpc.Message.create_request("get_schema", [SCHEMA_NAME]))
        while True:
            rpc.run()
            err, msg = rpc.recv()
            if msg is not None:
                if msg.error:
                    raise OvsdbUnavailable(remote, f"get_schema failed: {msg.error}")
                return dict(msg.result)
            left = deadline - time.monotonic()
            if err != errno.EAGAIN:
                raise OvsdbUnavailable(remote, _strerror(err))
            if left <= 0:
                raise OvsdbUnavailable(remote, f"no reply to get_schema within {timeout} s")
            wait = poller.Poller()
            rpc.wait(wait)
            rpc.recv_wait(wait)
            wait.timer_wait(int(left * 1000))
            wait.block()
    finally:
        rpc.close()


def _strerror(err: int) -> str:
    # python-ovs reports end-of-stream as a negative errno (ovs.util.EOF).
    return os.strerror(err) if err > 0 else "connection closed by server"
