"""TCP request/response latency: a 64-byte ping-pong over one connection (stdlib only).

``python pingpong.py server PORT`` echoes every 64-byte message on each
connection until the client closes; it prints ``ready`` once listening.
``python pingpong.py client HOST PORT COUNT`` sends COUNT requests one at a
time (TCP_NODELAY), waits for each echo and prints JSON with the round-trip
times' p50/p99/mean in microseconds (the first 10 are warm-up, not counted).
"""

from __future__ import annotations

import json
import socket
import sys
import time

SIZE = 64
WARMUP = 10


def recv_exact(conn: socket.socket, size: int) -> bytes:
    """Read exactly ``size`` bytes (b"" if the peer closed first)."""
    buf = b""
    while len(buf) < size:
        chunk = conn.recv(size - len(buf))
        if not chunk:
            return b""
        buf += chunk
    return buf


def serve(port: int) -> None:
    """Echo server, one connection at a time, forever."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen()
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            while data := recv_exact(conn, SIZE):
                conn.sendall(data)


def client(host: str, port: int, count: int) -> dict[str, float]:
    """``count`` timed round trips; p50/p99/mean in microseconds."""
    rtts = []
    payload = b"x" * SIZE
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(count + WARMUP):
            start = time.perf_counter_ns()
            conn.sendall(payload)
            if not recv_exact(conn, SIZE):
                raise ConnectionError("server closed")
            if i >= WARMUP:
                rtts.append((time.perf_counter_ns() - start) / 1000.0)
    rtts.sort()
    return {
        "p50_us": round(rtts[len(rtts) // 2], 1),
        "p99_us": round(rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))], 1),
        "mean_us": round(sum(rtts) / len(rtts), 1),
        "n": len(rtts),
    }


def main(argv: list[str]) -> int:
    """Command line (see the module docstring)."""
    if argv[:1] == ["server"]:
        serve(int(argv[1]))
        return 0
    if argv[:1] == ["client"]:
        print(json.dumps(client(argv[1], int(argv[2]), int(argv[3]))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
