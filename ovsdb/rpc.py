"""One OVSDB transaction over a plain JSON-RPC connection (no monitor, no replica).

# why: a transaction through the IDL returns only after the IDL thread has parsed
# and applied the server's echo of it (update notifications with every column of
# the new rows, watchers' snapshots, vswitchd's follow-up writes that arrived
# meanwhile), all in Python. For the CNI's pod port that was about 10 ms of a
# 20-30 ms ADD on a busy node; the same transaction sent on its own connection
# answers in 1-2 ms. The IDL still sees the rows, a moment later.

Only ``unix:PATH`` and ``tcp:HOST:PORT`` remotes are supported (``supports``);
callers fall back to the IDL for others (e.g. ``ssl:``).
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from ovsdb.errors import OvsdbError, OvsdbTimeout, OvsdbUnavailable

_RECV_SIZE = 65536


def supports(remote: str) -> bool:
    """Whether `transact` can reach `remote`."""
    return remote.startswith(("unix:", "tcp:"))


def transact(remote: str, database: str, ops: list[dict[str, Any]], timeout: float) -> list[Any]:
    """Run `ops` as one transaction on `database`; return the per-operation results.

    A failed operation shows as ``{"error": ..., "details": ...}`` in its slot (the
    transaction was then not committed). Raises OvsdbUnavailable when the server
    cannot be reached or drops the connection, OvsdbTimeout when it does not answer
    in time (in both cases the transaction may have been committed), OvsdbError
    for a JSON-RPC level error.
    """
    deadline = time.monotonic() + timeout
    request = {"id": 0, "method": "transact", "params": [database, *ops]}
    try:
        with _connect(remote, timeout) as sock:
            sock.sendall(json.dumps(request).encode())
            reply = _reply(sock, deadline)
    except TimeoutError as exc:
        raise OvsdbTimeout("transaction", timeout) from exc
    except OSError as exc:
        raise OvsdbUnavailable(remote, str(exc)) from exc
    if reply.get("error") is not None:
        raise OvsdbError(reason=f"transact: {reply['error']}")
    result = reply.get("result")
    if not isinstance(result, list):
        raise OvsdbError(reason=f"transact: malformed reply {reply!r:.200}")
    return result


def first_error(results: list[Any]) -> tuple[int, str] | None:
    """(index, "error: details") of the first failed operation, or None."""
    for index, result in enumerate(results):
        if isinstance(result, dict) and "error" in result:
            return index, f"{result['error']}: {result.get('details', '')}".rstrip(": ")
    return None


def _connect(remote: str, timeout: float) -> socket.socket:
    kind, _, where = remote.partition(":")
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        address: Any = where
    elif kind == "tcp":
        host, _, port = where.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        address = (host, int(port))
    else:
        raise OvsdbUnavailable(remote, "only unix: and tcp: remotes are supported")
    try:
        sock.settimeout(timeout)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _reply(sock: socket.socket, deadline: float) -> dict[str, Any]:
    """Read messages until the reply to request 0; answer the server's echo requests."""
    decoder = json.JSONDecoder()
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no reply")
        sock.settimeout(left)
        chunk = sock.recv(_RECV_SIZE)
        if not chunk:
            raise ConnectionResetError("connection closed by the server")
        data += chunk
        try:
            text = data.decode().lstrip()
        except UnicodeDecodeError:
            continue  # a character split between reads
        while text:
            try:
                message, end = decoder.raw_decode(text)
            except ValueError:
                break  # incomplete: read more
            text = text[end:].lstrip()
            data = text.encode()
            if not isinstance(message, dict):
                continue
            if message.get("method") == "echo":
                echo = {"id": message.get("id"), "result": message.get("params"), "error": None}
                sock.sendall(json.dumps(echo).encode())
            elif message.get("id") == 0 and "method" not in message:
                return message
