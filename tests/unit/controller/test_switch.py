"""Switch: batches end in a barrier, bundles wrap atomic batches, errors fail the batch."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.switch import Switch, SwitchError


class RecordingDatapath:
    """The edge os-ken gives us: xids, and a send_msg that records what was sent."""

    ofproto = ofp
    ofproto_parser = parser
    id = 1

    def __init__(self) -> None:
        self.xid = 0
        self.sent: list[Any] = []

    def set_xid(self, msg: Any) -> int:
        self.xid += 1
        msg.set_xid(self.xid)
        return self.xid

    def send_msg(self, msg: Any) -> None:
        msg.serialize()  # what os-ken does: every message must serialize
        self.sent.append(msg)


def flow_mod(dp: Any) -> Any:
    return parser.OFPFlowMod(dp, table_id=0, priority=1, match=parser.OFPMatch(in_port=1))


def answer_barrier(switch: Switch, dp: RecordingDatapath, error_on: int | None = None) -> None:
    """Play the switch: wait for the barrier, maybe report an error first, then reply."""

    def run() -> None:
        while not any(isinstance(m, parser.OFPBarrierRequest) for m in dp.sent):
            time.sleep(0.001)
        if error_on is not None:
            switch.error(dp.sent[error_on].xid, "OFPT_ERROR type=5 code=0")
        switch.barrier_reply(dp.sent[-1].xid)

    threading.Thread(target=run, daemon=True).start()


def test_batch_then_barrier() -> None:
    switch, dp = Switch(), RecordingDatapath()
    switch.attach(dp)
    answer_barrier(switch, dp)
    assert switch.send_batch(lambda d: [flow_mod(d), flow_mod(d)]) == 2
    assert [type(m).__name__ for m in dp.sent] == ["OFPFlowMod", "OFPFlowMod", "OFPBarrierRequest"]


def test_atomic_batch_travels_in_one_bundle() -> None:
    switch, dp = Switch(), RecordingDatapath()
    switch.attach(dp)
    answer_barrier(switch, dp)
    switch.send_batch(lambda d: [flow_mod(d), flow_mod(d)], atomic=True)
    kinds = [type(m).__name__ for m in dp.sent]
    assert kinds == [
        "ONFBundleCtrlMsg",
        "ONFBundleAddMsg",
        "ONFBundleAddMsg",
        "ONFBundleCtrlMsg",
        "OFPBarrierRequest",
    ]
    assert dp.sent[0].type == ofp.ONF_BCT_OPEN_REQUEST
    assert dp.sent[3].type == ofp.ONF_BCT_COMMIT_REQUEST
    assert {m.bundle_id for m in dp.sent[:4]} == {dp.sent[0].bundle_id}


def test_error_fails_the_batch() -> None:
    switch, dp = Switch(), RecordingDatapath()
    switch.attach(dp)
    answer_barrier(switch, dp, error_on=0)
    with pytest.raises(SwitchError, match="OFPT_ERROR"):
        switch.send_batch(lambda d: [flow_mod(d)])


def test_disconnect_fails_waiters_and_no_switch_is_an_error() -> None:
    switch, dp = Switch(), RecordingDatapath()
    switch.attach(dp)
    threading.Timer(0.05, switch.detach, [dp]).start()
    with pytest.raises(SwitchError, match="disconnected"):
        switch.send_batch(lambda d: [flow_mod(d)])
    with pytest.raises(SwitchError, match="not connected"):
        switch.send_batch(lambda d: [flow_mod(d)])


def test_timeout() -> None:
    switch, dp = Switch(), RecordingDatapath()
    switch.attach(dp)
    with pytest.raises(SwitchError, match="no answer"):
        switch.send_batch(lambda d: [flow_mod(d)], timeout=0.05)


def test_flow_stats_collects_multipart() -> None:
    switch, dp = Switch(), RecordingDatapath()
    switch.attach(dp)

    def reply() -> None:
        while not dp.sent:
            time.sleep(0.001)
        xid = dp.sent[0].xid
        switch.stats_reply(xid, ["a", "b"], more=True)
        switch.stats_reply(xid, ["c"], more=False)

    threading.Thread(target=reply, daemon=True).start()
    assert switch.dump_flows() == ["a", "b", "c"]
