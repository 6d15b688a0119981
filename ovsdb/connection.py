"""OvsdbClient: one IDL owner thread over the Open_vSwitch database (ovsdbapp).

Threading model
    ovsdbapp's ``Connection`` runs one thread that owns the python-ovs IDL
    (``ovsdb.replica``): it runs ``idl.run()`` and commits queued transactions
    one at a time. Every other thread only queues transactions
    (``transaction()``), reads the replica under the connection lock
    (``cache()``), or sends a raw transaction on a connection of its own
    (``transact()``, see ``ovsdb.rpc``), which the replica sees moments later.

Watching rows
    ``watch(table, cb)`` calls ``cb(event, snapshot)`` on the IDL thread for every
    row change, right after the update is applied to the replica, i.e. within
    milliseconds of the commit. Callbacks must not block and must not call back
    into this client synchronously (the IDL thread would wait on itself): hand
    the snapshot to a queue. Exceptions from callbacks are logged and dropped.

Waiting for ovs-vswitchd
    A transaction with ``wait_vswitchd`` bumps ``next_cfg``; the *calling*
    thread then waits until vswitchd reports ``cur_cfg`` at least that high.
    The IDL thread never waits, so other transactions commit meanwhile and
    vswitchd applies them together in one reconfiguration.

Reconnects
    If ovsdb-server goes away the IDL reconnects by itself (backoff 1 s doubling
    to 8 s). Transactions queued meanwhile retry until their timeout and then
    raise ``OvsdbUnavailable``. After a reconnect the server may resend the whole
    database: watchers then see ``create`` for rows they already knew and get
    no ``delete`` for rows removed while disconnected, so consumers must
    reconcile from ``find_ports`` rather than trust the event stream alone
    (``on_resync`` says when).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from ovs import jsonrpc, poller, stream
from ovs.db import idl as ovs_idl
from ovsdbapp import exceptions as app_exc
from ovsdbapp.backend.ovs_idl import connection as app_conn
from ovsdbapp.backend.ovs_idl import transaction as app_txn
from ovsdbapp.schema.open_vswitch import impl_idl

from ovsdb import rpc
from ovsdb.errors import OvsdbError, OvsdbTimeout, OvsdbUnavailable
from ovsdb.replica import SCHEMA_NAME, RowCallback, WatchingIdl, register_tables, row_snapshot

LOG = logging.getLogger(__name__)
__all__ = ["OvsdbClient", "RowCallback", "VswitchdTransaction", "row_snapshot"]


class VswitchdTransaction(impl_idl.OvsVsctlTransaction):
    """ovsdbapp's vsctl-style transaction that records instead of logging.

    ``wait_vswitchd`` (or ``bump_cfg`` alone): bump ``next_cfg`` (as ovs-vsctl
    does); after the commit ``next_cfg`` holds the value to wait for. With
    ``wait_vswitchd`` ``OvsdbClient.transaction`` waits and sets
    ``vswitchd_applied``: True, or False if vswitchd did not catch up in time.
    """

    def __init__(
        self,
        api: Any,
        conn: Any,
        timeout: float,
        wait_vswitchd: bool = True,
        check_error: bool = True,
        log_errors: bool = False,
        bump_cfg: bool = False,
    ) -> None:
        super().__init__(api, conn, check_error=check_error, log_errors=log_errors)
        self.timeout = timeout  # why: impl_idl.create_transaction drops the timeout kwarg
        self.wait_vswitchd = wait_vswitchd
        self.bump_cfg = bump_cfg or wait_vswitchd
        self.next_cfg: int | None = None
        self.vswitchd_applied: bool | None = None

    def pre_commit(self, txn: Any) -> None:
        if self.bump_cfg:  # why: python-ovs applies it only with other changes in txn
            self.api._ovs.increment("next_cfg")
        txn.expected_ifaces = set()

    def post_commit(self, txn: Any) -> None:
        app_txn.Transaction.post_commit(self, txn)  # the commands' own post_commit
        if self.bump_cfg:
            # why: no waiting here, on the IDL thread; the caller waits (see module doc).
            self.next_cfg = txn.get_increment_new_value()


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
        bump_cfg: bool = False,
        **kwargs: Any,
    ) -> VswitchdTransaction:
        conn = self.ovsdb_connection
        timeout = timeout or conn.timeout
        return VswitchdTransaction(
            self, conn, timeout, wait_vswitchd, check_error, log_errors, bump_cfg
        )


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
        register_tables(helper)
        self._idl = WatchingIdl(remote, helper)
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
        self, timeout: float | None = None, wait_vswitchd: bool = True, bump_cfg: bool = False
    ) -> Iterator[VswitchdTransaction]:
        """Collect commands (``txn.add(client.api.add_br(...))``) and commit them atomically.

        The commit runs on the IDL thread when the ``with`` block exits without an
        exception; then ``txn.result`` holds each command's result. With
        ``wait_vswitchd`` it returns only after ovs-vswitchd applied the change
        (see ``txn.vswitchd_applied``). ``bump_cfg`` alone bumps ``next_cfg``
        without waiting, so that a later ``wait_vswitchd()`` covers this change.

        Raises:
            OvsdbError (or a subclass raised by a command): the commit failed.
            OvsdbTimeout: no answer within ``timeout``; the transaction may still
                commit later, so follow up with an idempotent check or cleanup.
            OvsdbUnavailable: as OvsdbTimeout, while the session is down.
        """
        txn = self.api.create_transaction(
            timeout=timeout or self.timeout, wait_vswitchd=wait_vswitchd, bump_cfg=bump_cfg
        )
        yield txn
        deadline = time.monotonic() + txn.timeout
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
        if wait_vswitchd and txn.next_cfg is not None:
            txn.vswitchd_applied = self._wait_cfg(txn.next_cfg, deadline - time.monotonic())

    def transact(self, ops: list[dict[str, Any]], timeout: float | None = None) -> list[Any]:
        """Run raw OVSDB operations as one transaction on a separate plain connection.

        Returns without waiting for the IDL replica to see the change (see
        ovsdb.rpc for why and for the errors); ``can_transact`` says whether the
        remote allows it.
        """
        return rpc.transact(
            self.remote, SCHEMA_NAME, ops, self.timeout if timeout is None else timeout
        )

    @property
    def can_transact(self) -> bool:
        """Whether ``transact`` works with this remote (unix: or tcp:)."""
        return rpc.supports(self.remote)

    def used_ofports(self) -> set[int]:
        """Every ofport that an Interface in the replica has or requests."""
        with self.cache() as tables:
            rows = tables["Interface"].rows
            known = self._idl.iface_ofports
            for gone in known.keys() - rows.keys():  # removed while disconnected
                del known[gone]
            return {n for numbers in known.values() for n in numbers}

    def pod_iface_uuid(self, container_id: str, if_name: str) -> Any | None:
        """The uuid of the CNI's Interface for (container id, ifname), from an index the
        IDL thread keeps; None if there is none. Check the row in ``cache()``: a row
        deleted while the session was down may still be indexed."""
        return self._idl.pod_ifaces.get((container_id, if_name))

    def wait_vswitchd(self, timeout: float | None = None) -> bool:
        """Wait until the replica shows every change the server had committed when
        called, and ovs-vswitchd applied them (for transactions that bump next_cfg:
        ``wait_vswitchd``, ``bump_cfg``, ``transact`` callers that do). False if not
        within ``timeout``."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        if self.can_transact:
            select = {"op": "select", "table": SCHEMA_NAME, "where": [], "columns": ["next_cfg"]}
            rows = self.transact([select], timeout)[0].get("rows") or [{"next_cfg": 0}]
            target = int(rows[0]["next_cfg"])
        else:
            with self.cache() as tables:
                found = list(tables[SCHEMA_NAME].rows.values())
                target = int(found[0].next_cfg) if found else 0
        return self._wait_cfg(target, deadline - time.monotonic())

    def _wait_cfg(self, next_cfg: int, timeout: float) -> bool:
        idl, cond = self._idl, self._idl.cfg_changed
        with cond:
            return cond.wait_for(
                lambda: min(idl.cur_cfg, idl.next_cfg) >= next_cfg, max(timeout, 0.0)
            )

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

    def on_resync(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after each reconnect, once the replica holds the whole
        database again (IDL thread; the same rules as for ``watch``; ``cache()`` works).

        Rows deleted while disconnected get no ``delete`` event: re-read them here.
        """
        self._idl.add_resync_callback(callback)

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
