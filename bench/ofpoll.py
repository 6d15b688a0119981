"""Watch br-int for new pod Classifier flows by polling flow stats over OpenFlow 1.3.

OVS 3.1's flow monitor is no use here: its OpenFlow 1.3 (ONF) replies carry a
bogus length, so ``ovs-ofctl monitor`` prints an update only when a later one
arrives. Instead a thread keeps one connection to ``br-int.mgmt`` and asks every
``interval`` seconds for the table-0 flows whose cookie says "pod" (category 3,
``flows.cookies``); it stamps the moment the count of those flows changes.
Resolution: the poll interval plus one request's round trip (≈ 1 ms).
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from os_ken.ofproto import ofproto_protocol, ofproto_v1_3
from os_ken.ofproto import ofproto_v1_3_parser as parser

from flows import cookies

_HEADER = struct.Struct("!BBHI")
_OFPT_ECHO_REQUEST, _OFPT_ECHO_REPLY, _OFPT_MULTIPART_REPLY = 2, 3, 19
_MP_HEADER = 16  # ofp_header + multipart type, flags, pad


def _request(table: int, xid: int) -> bytes:
    """OFPMP_FLOW request for the pod flows of ``table`` (cookie category + table bits)."""
    dp = ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION)
    ofp = dp.ofproto
    cookie = cookies.with_table(cookies.make(1, cookies.Category.POD, 0), table) & ~(0xFFFF << 48)
    mask = (0xFF << 40) | (0xFF << 32)
    req = parser.OFPFlowStatsRequest(
        dp, 0, table, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, mask, parser.OFPMatch()
    )
    req.xid = xid
    req.serialize()
    return bytes(req.buf)


class PodFlowPoller:
    """A thread counting pod flows in one table; ``changes`` holds (time, count) stamps."""

    def __init__(self, mgmt: str, table: int = 0, interval: float = 0.001) -> None:
        self.changes: list[tuple[float, int]] = []
        self.count = 0
        self._interval = interval
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(mgmt)
        self._sock.sendall(_HEADER.pack(ofproto_v1_3.OFP_VERSION, 0, 8, 1))  # HELLO
        self._recv_message()  # the switch's HELLO
        self._req = _request(table, 2)
        self.count = self._poll()
        self._thread = threading.Thread(target=self._run, name="flow-poller", daemon=True)
        self._thread.start()

    def _recv_exact(self, size: int) -> bytes:
        buf = b""
        while len(buf) < size:
            chunk = self._sock.recv(size - len(buf))
            if not chunk:
                raise ConnectionError("br-int.mgmt closed")
            buf += chunk
        return buf

    def _recv_message(self) -> tuple[int, bytes]:
        head = self._recv_exact(_HEADER.size)
        _version, kind, length, _xid = _HEADER.unpack(head)
        return kind, head + self._recv_exact(length - _HEADER.size)

    def _poll(self) -> int:
        """One request; the number of flow entries in the (single-part) reply."""
        self._sock.sendall(self._req)
        while True:
            kind, msg = self._recv_message()
            if kind == _OFPT_ECHO_REQUEST:
                self._sock.sendall(_HEADER.pack(msg[0], _OFPT_ECHO_REPLY, len(msg), 0) + msg[8:])
            elif kind == _OFPT_MULTIPART_REPLY:
                return _count_entries(msg)

    def _run(self) -> None:
        while not self._stop.is_set():
            count = self._poll()
            if count != self.count:
                self.changes.append((time.perf_counter(), count))
                self.count = count
            time.sleep(self._interval)

    def first_reaching(self, count: int) -> float | None:
        """When the pod-flow count first reached ``count`` (None if not yet)."""
        return next((t for t, c in list(self.changes) if c >= count), None)

    def stop(self) -> None:
        """Stop the thread and close the connection."""
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def _count_entries(msg: bytes) -> int:
    """Walk the ofp_flow_stats entries (each starts with its 16-bit length)."""
    offset, count = _MP_HEADER, 0
    while offset + 2 <= len(msg):
        (length,) = struct.unpack_from("!H", msg, offset)
        if length == 0:
            break
        offset += length
        count += 1
    return count
