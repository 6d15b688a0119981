"""The node's CNI server: answers the `sluice` binary over a root-only unix socket.

One thread per request; requests for the same container are serialized by a
per-container lock, different containers run in parallel. At start the server
replays DELs that the binary recorded while the server was down.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cni import skel
from cni.types import ERR_DECODE, CniError

LOG = logging.getLogger(__name__)
_MAX_REQUEST = 4 * 1024 * 1024


class _KeyedLocks:
    """One lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def held(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


class _Handler(socketserver.StreamRequestHandler):
    server: _UnixServer

    def handle(self) -> None:
        data = self.rfile.read(_MAX_REQUEST)
        rc, out = self.server.owner.handle_request_bytes(data)
        self.wfile.write(json.dumps({"rc": rc, "stdout": out}).encode())


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    # why: the default listen backlog of 5 makes the 7th simultaneous shim fail
    # to connect; kubelet starts many pods at once.
    request_queue_size = 256
    owner: CniServer


class CniServer:
    """Serve CNI requests for `plugin` on the unix socket `path` (mode 0600)."""

    def __init__(
        self,
        path: str,
        plugin: skel.Plugin,
        observer: Callable[[str, int, float], None] | None = None,
    ) -> None:
        self.path = path
        self.plugin = plugin
        self.observer = observer
        self._locks = _KeyedLocks()
        self._server: _UnixServer | None = None
        self._thread: threading.Thread | None = None
        self.requests = 0

    def handle_request_bytes(self, data: bytes) -> tuple[int, str]:
        """Decode one request, run it under its container's lock; return (rc, stdout)."""
        try:
            request = json.loads(data)
            env = {str(k): str(v) for k, v in request["env"].items()}
            stdin = base64.b64decode(request["stdin"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            err = CniError(ERR_DECODE, "malformed request from the sluice binary", str(exc))
            return 1, json.dumps(err.to_json("1.1.0"))
        return self.run(env, stdin)

    def run(self, env: dict[str, str], stdin: bytes) -> tuple[int, str]:
        """Run one CNI invocation (serialized per container id)."""
        self.requests += 1
        out = io.StringIO()
        started = time.monotonic()
        with self._locks.held(env.get("CNI_CONTAINERID", "")):
            rc = skel.run(env, stdin, out, self.plugin)
        elapsed = time.monotonic() - started
        if self.observer is not None:
            self.observer(env.get("CNI_COMMAND", ""), _error_code(rc, out.getvalue()), elapsed)
        LOG.info(
            "CNI %s %s/%s rc=%d in %.1f ms",
            env.get("CNI_COMMAND"),
            env.get("CNI_CONTAINERID", "")[:12],
            env.get("CNI_IFNAME", ""),
            rc,
            elapsed * 1000,
        )
        return rc, out.getvalue()

    def start(self) -> None:
        """Bind the socket (replacing a stale one) and serve in a background thread."""
        sock_dir = Path(self.path).parent
        sock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.path.exists(self.path):
            os.unlink(self.path)
        old_umask = os.umask(0o177)
        try:
            self._server = _UnixServer(self.path, _Handler, bind_and_activate=True)
        finally:
            os.umask(old_umask)
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="cni-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and remove the socket file."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if os.path.exists(self.path):
            os.unlink(self.path)

    def replay_pending_deletes(self, state_dir: str) -> list[str]:
        """Replay DELs the binary recorded while the server was down; return failures."""
        spool = Path(state_dir) / "pending-del"
        failed: list[str] = []
        if not spool.is_dir():
            return failed
        for record in sorted(spool.glob("*.json")):
            try:
                data: dict[str, Any] = json.loads(record.read_text())
                rc, out = self.run(dict(data["env"]), base64.b64decode(data["stdin"]))
            except (ValueError, KeyError, TypeError) as exc:
                rc, out = 1, str(exc)
            if rc == 0:
                record.unlink()
            else:
                failed.append(f"{record.name}: {out}")
        return failed


def _error_code(rc: int, stdout: str) -> int:
    """0 for success, else the CNI error code printed on stdout (999 if unreadable)."""
    if rc == 0:
        return 0
    try:
        return int(json.loads(stdout)["code"])
    except (ValueError, KeyError, TypeError):
        return 999
