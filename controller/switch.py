"""The br-int connection: the only module that calls `datapath.send_msg`.

`Switch` sends batches of OpenFlow messages followed by a barrier and waits for
the barrier reply (errors that arrive before it fail the batch), and dumps the
installed flows. The os-ken app feeds it replies from its event handlers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

LOG = logging.getLogger(__name__)


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

        With `atomic` the messages travel in one OpenFlow bundle (the ONF extension
        OVS implements for OpenFlow 1.3): the switch applies all of them or none,
        and no packet sees half of the change.

        Returns the number of messages sent. Raises SwitchError on a switch error,
        a disconnect or a timeout.
        """
        dp = self._require()
        msgs = list(build(dp))
        if atomic and msgs:
            msgs = self._bundle(dp, msgs)
        barrier = dp.ofproto_parser.OFPBarrierRequest(dp)
        pending = _Pending()
        started = time.monotonic()
        with self._lock:
            for msg in msgs:
                dp.set_xid(msg)
            dp.set_xid(barrier)
            self._pending[barrier.xid] = pending
            self._batch_xids.update({m.xid: barrier.xid for m in msgs})
        try:
            for msg in msgs:
                dp.send_msg(msg)
            dp.send_msg(barrier)
            self._wait(pending, timeout, f"barrier after {len(msgs)} messages")
        finally:
            with self._lock:
                for msg in msgs:
                    self._batch_xids.pop(msg.xid, None)
        if self._observe is not None:
            self._observe(time.monotonic() - started)
        return len(msgs)

    def _bundle(self, dp: Any, msgs: list[Any]) -> list[Any]:
        ofp, parser = dp.ofproto, dp.ofproto_parser
        with self._lock:
            self._bundle_id = (self._bundle_id + 1) & 0xFFFFFFFF
            bundle_id = self._bundle_id
        flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
        return [
            parser.ONFBundleCtrlMsg(dp, bundle_id, ofp.ONF_BCT_OPEN_REQUEST, flags, []),
            *(parser.ONFBundleAddMsg(dp, bundle_id, flags, m, []) for m in msgs),
            parser.ONFBundleCtrlMsg(dp, bundle_id, ofp.ONF_BCT_COMMIT_REQUEST, flags, []),
        ]

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
