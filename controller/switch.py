"""The br-int connection: the only module that calls `datapath.send_msg`.

`Switch` sends batches of OpenFlow messages followed by a barrier and waits for
the barrier reply (errors that arrive before it fail the batch), and dumps the
installed flows. The os-ken app feeds it replies from its event handlers.

A batch may mix os-ken message objects with pre-encoded messages (``bytes``
from ``flows.ofmsg.encode_*``, xid 0): the switch gives those their xids from
the datapath's counter and hands runs of them to the datapath's send queue as
one buffer, instead of one queued write per message. A batch is sent while it
is being built, so the switch works on its start while the rest is encoded.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

LOG = logging.getLogger(__name__)
# ofp_header + ONF experimenter id + ONF_ET_BUNDLE_ADD_MESSAGE + bundle id, pad, flags
_BUNDLE_ADD = struct.Struct("!BBHIIII2xH")
_ONF_EXPERIMENTER_ID = 0x4F4E4600
_ONF_ET_BUNDLE_ADD_MESSAGE = 2301
_OFPT_EXPERIMENTER = 4
_XID_AT = 4  # offset of the xid in an ofp_header
_FLUSH_BYTES = 1 << 16  # why: big enough to amortize the queue, small enough to start OVS early


class _XidSink:
    """Takes the xid ``Datapath.set_xid`` hands out (for messages os-ken never sees)."""

    def set_xid(self, xid: int) -> None:
        """Nothing to store: the caller uses set_xid's return value."""


_XID_SINK = _XidSink()
_RAW = (bytes, bytearray)  # a pre-encoded message


class SwitchError(Exception):
    """The switch rejected a batch, went away, or did not answer in time."""


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    stats: list[Any] = field(default_factory=list)


class Switch:
    """One datapath (br-int) connection shared by the app and the reconciler."""

    def __init__(self, on_flow_mod_seconds: Any = None) -> None:
        self._lock = threading.Lock()
        self._dp: Any = None
        self._generation = 0
        self._pending: dict[int, _Pending] = {}
        self._batch_xids: dict[int, int] = {}  # message xid -> barrier xid
        self._observe = on_flow_mod_seconds
        self._bundle_id = 0

    # --- connection state (called by the app) ------------------------------
    def attach(self, datapath: Any) -> int:
        """A datapath connected; return its generation number."""
        with self._lock:
            self._dp = datapath
            self._generation += 1
            return self._generation

    def detach(self, datapath: Any) -> None:
        """The datapath went away; fail everything that waits on it."""
        with self._lock:
            if self._dp is not datapath:
                return
            self._dp = None
            pending, self._pending = self._pending, {}
            self._batch_xids.clear()
        for p in pending.values():
            p.errors.append("switch disconnected")
            p.done.set()

    @property
    def datapath(self) -> Any:
        """The connected datapath, or None."""
        return self._dp

    @property
    def generation(self) -> int:
        """Bumped on every (re)connection."""
        return self._generation

    # --- replies (called by the app) ---------------------------------------
    def barrier_reply(self, xid: int) -> None:
        """Complete the batch whose barrier had `xid`."""
        with self._lock:
            pending = self._pending.pop(xid, None)
        if pending is not None:
            pending.done.set()

    def error(self, xid: int, text: str) -> None:
        """Record an OFPT_ERROR against the batch that sent message `xid`."""
        with self._lock:
            barrier = self._batch_xids.get(xid)
            pending = self._pending.get(barrier) if barrier is not None else None
        if pending is None:
            LOG.error("switch error for unknown xid %#x: %s", xid, text)
        else:
            pending.errors.append(text)

    def stats_reply(self, xid: int, body: Sequence[Any], more: bool) -> None:
        """Collect a multipart reply; complete the request on its last part."""
        with self._lock:
            pending = self._pending.get(xid)
            if pending is not None and not more:
                del self._pending[xid]
        if pending is None:
            return
        pending.stats.extend(body)
        if not more:
            pending.done.set()

    # --- requests (called by the reconciler) --------------------------------
    def send_batch(self, build: Any, timeout: float = 10.0, atomic: bool = False) -> int:
        """Send `build(datapath)`'s messages plus a barrier; wait for the barrier.

        A message is an os-ken message object or a pre-encoded OpenFlow message
        (`bytes`, xid 0). `build` may return an iterator: messages go out while it
        runs, in buffers of up to 64 KiB, so the switch parses them meanwhile.
        With `atomic` the messages travel in one OpenFlow bundle (the ONF extension
        OVS implements for OpenFlow 1.3): the switch applies all of them or none,
        and no packet sees half of the change; a bundle left open by a failing
        `build` is discarded.

        Returns the number of messages sent. Raises SwitchError on a switch error,
        a disconnect or a timeout.
        """
        dp = self._require()
        barrier = dp.ofproto_parser.OFPBarrierRequest(dp)
        pending = _Pending()
        started = time.monotonic()
        with self._lock:
            dp.set_xid(barrier)
            self._pending[barrier.xid] = pending
        out = _Stream(dp, barrier.xid)
        try:
            self._stream(out, build(dp), atomic)
            dp.send_msg(barrier)
            self._wait(pending, timeout, f"barrier after {len(out.xids)} messages")
        except BaseException:
            if out.bundle is not None and not out.committed:
                self._discard(dp, out.bundle)
            raise
        finally:
            with self._lock:
                self._pending.pop(barrier.xid, None)
                for xid in out.xids:
                    self._batch_xids.pop(xid, None)
        if self._observe is not None:
            self._observe(time.monotonic() - started)
        return len(out.xids)

    def _stream(self, out: _Stream, msgs: Any, atomic: bool) -> None:
        """Send `msgs` in order (in a bundle if `atomic` and there are any)."""
        dp = out.dp
        ofp, parser = dp.ofproto, dp.ofproto_parser
        for msg in msgs:
            if atomic and out.bundle is None:
                out.bundle = (self._next_bundle_id(), ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED)
                self._send_one(out, _bundle_ctrl(dp, out.bundle, ofp.ONF_BCT_OPEN_REQUEST))
            if out.bundle is not None and not isinstance(msg, _RAW):
                msg = parser.ONFBundleAddMsg(dp, *out.bundle, msg, [])
            self._send_one(out, msg)
        if out.bundle is not None:
            self._send_one(out, _bundle_ctrl(dp, out.bundle, ofp.ONF_BCT_COMMIT_REQUEST))
            out.committed = True
        out.flush()

    def _send_one(self, out: _Stream, msg: Any) -> None:
        """Number `msg`, record it against the batch, then send or buffer it."""
        raw = isinstance(msg, _RAW)
        with self._lock:
            xid = out.dp.set_xid(_XID_SINK if raw else msg)
            self._batch_xids[xid] = out.barrier_xid
        out.xids.append(xid)
        if raw:
            out.add(msg, xid)
        else:
            out.flush()
            out.dp.send_msg(msg)

    def _next_bundle_id(self) -> int:
        with self._lock:
            self._bundle_id = (self._bundle_id + 1) & 0xFFFFFFFF
            return self._bundle_id

    def _discard(self, dp: Any, bundle: tuple[int, int]) -> None:
        """Best effort: tell the switch to drop a bundle this batch left open."""
        try:
            dp.send_msg(_bundle_ctrl(dp, bundle, dp.ofproto.ONF_BCT_DISCARD_REQUEST))
        except Exception:  # noqa: BLE001 — the batch's own error is the one to report
            LOG.warning("could not discard bundle %d", bundle[0])

    def dump_flows(self, timeout: float = 10.0) -> list[Any]:
        """All installed flows (OFPFlowStats) of every table."""
        dp = self._require()
        ofp, parser = dp.ofproto, dp.ofproto_parser
        req = parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY)
        pending = _Pending()
        with self._lock:
            dp.set_xid(req)
            self._pending[req.xid] = pending
        dp.send_msg(req)
        self._wait(pending, timeout, "flow stats")
        return pending.stats

    def _require(self) -> Any:
        dp = self._dp
        if dp is None:
            raise SwitchError("switch not connected")
        return dp

    def _wait(self, pending: _Pending, timeout: float, what: str) -> None:
        if not pending.done.wait(timeout):
            raise SwitchError(f"no answer to {what} within {timeout} s")
        if pending.errors:
            raise SwitchError("; ".join(pending.errors))


def _bundle_ctrl(dp: Any, bundle: tuple[int, int], kind: int) -> Any:
    """An ONF bundle control message (open, commit, discard) for (bundle id, flags)."""
    return dp.ofproto_parser.ONFBundleCtrlMsg(dp, bundle[0], kind, bundle[1], [])


@dataclass
class _Stream:
    """One batch on its way out: its xids, its bundle, and pre-encoded bytes not yet sent."""

    dp: Any
    barrier_xid: int
    xids: list[int] = field(default_factory=list)
    bundle: tuple[int, int] | None = None  # (bundle id, flags) once opened
    committed: bool = False
    buf: bytearray = field(default_factory=bytearray)

    def add(self, msg: bytes | bytearray, xid: int) -> None:
        """Append a pre-encoded message with its xid (inside a bundle-add if bundled)."""
        buf = self.buf
        if self.bundle is not None:
            size = _BUNDLE_ADD.size + len(msg)
            version = self.dp.ofproto.OFP_VERSION
            buf += _BUNDLE_ADD.pack(
                version, _OFPT_EXPERIMENTER, size, xid, _ONF_EXPERIMENTER_ID,
                _ONF_ET_BUNDLE_ADD_MESSAGE, *self.bundle,
            )  # fmt: skip
        at = len(buf)
        buf += msg
        # why: the inner message of a bundle-add carries the outer xid (OF1.3 bundle ext. 3.3)
        struct.pack_into("!I", buf, at + _XID_AT, xid)
        if len(buf) >= _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Hand the buffered bytes to the datapath's send queue."""
        if self.buf:
            self.dp.send(bytes(self.buf))
            self.buf.clear()
