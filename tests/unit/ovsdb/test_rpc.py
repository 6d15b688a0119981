"""ovsdb.rpc.transact against a scripted JSON-RPC peer on a unix socket."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ovsdb import rpc
from ovsdb.errors import OvsdbError, OvsdbTimeout, OvsdbUnavailable

Script = Callable[[socket.socket, dict[str, object]], object]


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Callable[[Script], str]]:
    """Start a one-connection server running `script(conn, request)`; return its remote."""
    threads: list[threading.Thread] = []
    socks: list[socket.socket] = []

    def start(script: Script) -> str:
        path = str(tmp_path / f"db{len(socks)}.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        socks.append(listener)

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                request = json.JSONDecoder().raw_decode(conn.recv(65536).decode())[0]
                script(conn, request)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        return f"unix:{path}"

    yield start
    for listener in socks:
        listener.close()
    for thread in threads:
        thread.join(5)


def test_reply_in_pieces_after_an_echo(peer: Callable[[Script], str]) -> None:
    seen: list[object] = []

    def script(conn: socket.socket, request: dict[str, object]) -> None:
        seen.append(request)
        conn.sendall(b'{"id": "echo", "method": "echo", "params": []}')
        echo = json.loads(conn.recv(65536))
        seen.append(echo)
        reply = json.dumps(
            {"id": 0, "result": [{"count": 1}, {"error": "timed out"}], "error": None}
        )
        for i in range(0, len(reply), 7):
            conn.sendall(reply[i : i + 7].encode())

    results = rpc.transact(peer(script), "Open_vSwitch", [{"op": "comment"}], 5.0)
    assert results == [{"count": 1}, {"error": "timed out"}]
    assert rpc.first_error(results) == (1, "timed out")
    assert seen == [
        {"id": 0, "method": "transact", "params": ["Open_vSwitch", {"op": "comment"}]},
        {"id": "echo", "result": [], "error": None},
    ]


def test_rpc_error_and_malformed_reply(peer: Callable[[Script], str]) -> None:
    def failing(conn: socket.socket, request: dict[str, object]) -> None:
        conn.sendall(b'{"id": 0, "result": null, "error": "unknown database"}')

    with pytest.raises(OvsdbError, match="unknown database"):
        rpc.transact(peer(failing), "Nope", [], 5.0)

    def malformed(conn: socket.socket, request: dict[str, object]) -> None:
        conn.sendall(b'{"id": 0, "result": 7, "error": null}')

    with pytest.raises(OvsdbError, match="malformed"):
        rpc.transact(peer(malformed), "Open_vSwitch", [], 5.0)


def test_dropped_silent_and_absent_servers(peer: Callable[[Script], str], tmp_path: Path) -> None:
    with pytest.raises(OvsdbUnavailable, match="closed"):
        rpc.transact(peer(lambda conn, request: None), "Open_vSwitch", [], 5.0)
    release = threading.Event()
    with pytest.raises(OvsdbTimeout):
        rpc.transact(peer(lambda conn, request: release.wait(5)), "Open_vSwitch", [], 0.3)
    release.set()
    with pytest.raises(OvsdbUnavailable):
        rpc.transact(f"unix:{tmp_path / 'none.sock'}", "Open_vSwitch", [], 1.0)


def test_supported_remotes() -> None:
    assert rpc.supports("unix:/run/openvswitch/db.sock") and rpc.supports("tcp:127.0.0.1:6640")
    assert not rpc.supports("ssl:127.0.0.1:6640")
    assert rpc.first_error([{}, {"count": 1}]) is None
