"""Switch with pre-encoded messages: the bytes on the wire equal os-ken's, xids and errors work."""

from __future__ import annotations

import threading
import time

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp

from controller.switch import Switch, SwitchError
from flows import ofmsg
from tests.unit.controller.wire_dp import WireDatapath
from tests.unit.flows.test_ofwire import FLOWS


def sent_bytes(build, atomic: bool) -> bytes:
    """The byte stream one send_batch puts on a fresh connection."""
    switch, dp = Switch(), WireDatapath()
    dp.switch = switch
    switch.attach(dp)
    switch.send_batch(build, atomic=atomic)
    return bytes(dp.stream)


@pytest.mark.parametrize("atomic", [True, False], ids=["bundle", "plain"])
def test_pre_encoded_batch_is_byte_identical_to_the_os_ken_batch(atomic: bool) -> None:
    fast = sent_bytes(lambda _dp: [ofmsg.encode_add(f) for f in FLOWS], atomic)
    reference = sent_bytes(lambda dp: [ofmsg.add_flow(dp, f) for f in FLOWS], atomic)
    assert fast == reference


def test_recookies_and_deletes_in_a_bundle_are_byte_identical() -> None:
    pairs = [(f, f.cookie ^ (1 << 48)) for f in FLOWS]
    fast = sent_bytes(
        lambda _dp: (
            [ofmsg.encode_recookie(f, o) for f, o in pairs]
            + [ofmsg.encode_delete(f) for f in FLOWS]
        ),
        atomic=True,
    )
    reference = sent_bytes(
        lambda dp: (
            [ofmsg.recookie_flow(dp, f, o) for f, o in pairs]
            + [ofmsg.delete_flow(dp, f) for f in FLOWS]
        ),
        atomic=True,
    )
    assert fast == reference


def test_mixed_batch_keeps_its_order_and_every_message_its_own_xid() -> None:
    switch, dp = Switch(), WireDatapath()
    dp.switch = switch
    switch.attach(dp)
    a, b, c = FLOWS[:3]
    switch.send_batch(
        lambda d: (
            [ofmsg.encode_add(a), ofmsg.delete_round(d, 4), ofmsg.encode_modify(b)]
            + [ofmsg.encode_delete(c)]
        )
    )
    msgs = dp.messages()
    assert [m.msg_type for m in msgs] == [ofp.OFPT_FLOW_MOD] * 4 + [ofp.OFPT_BARRIER_REQUEST]
    commands = [m.flow_mod_command for m in msgs[:4]]
    assert commands == [ofp.OFPFC_ADD, ofp.OFPFC_DELETE, ofp.OFPFC_MODIFY_STRICT] + [
        ofp.OFPFC_DELETE_STRICT
    ]
    assert len({m.xid for m in msgs}) == len(msgs)


def test_bundled_pre_encoded_message_shares_its_xid_with_the_bundle_add() -> None:
    switch, dp = Switch(), WireDatapath()
    dp.switch = switch
    switch.attach(dp)
    switch.send_batch(lambda _d: [ofmsg.encode_add(f) for f in FLOWS[:5]], atomic=True)
    adds = [m for m in dp.messages() if m.inner is not None]
    assert len(adds) == 5
    assert all(m.inner is not None and m.inner.xid == m.xid for m in adds)
    assert len({m.xid for m in adds}) == 5


def test_an_error_against_a_pre_encoded_message_fails_the_batch() -> None:
    switch, dp = Switch(), WireDatapath()
    switch.attach(dp)

    def play_switch() -> None:
        while not any(m.msg_type == ofp.OFPT_BARRIER_REQUEST for m in dp.messages()):
            time.sleep(0.001)
        msgs = dp.messages()
        switch.error(msgs[1].xid, "OFPT_ERROR type=4 code=9")  # the second flow-mod
        switch.barrier_reply(msgs[-1].xid)

    threading.Thread(target=play_switch, daemon=True).start()
    with pytest.raises(SwitchError, match="type=4 code=9"):
        switch.send_batch(lambda _d: [ofmsg.encode_add(f) for f in FLOWS[:3]])


def test_a_build_that_fails_midway_discards_its_open_bundle() -> None:
    switch, dp = Switch(), WireDatapath()
    dp.switch = switch
    switch.attach(dp)

    def build(_dp):
        yield ofmsg.encode_add(FLOWS[0])
        raise RuntimeError("compiler bug")

    with pytest.raises(RuntimeError, match="compiler bug"):
        switch.send_batch(build, atomic=True)
    controls = [m for m in dp.messages() if m.inner is None]
    assert all(m.experimenter == (0x4F4E4600, ofp.ONF_ET_BUNDLE_CONTROL) for m in controls)
    kinds = [int.from_bytes(m.data[20:22], "big") for m in controls]  # ONF bundle ctrl type
    assert kinds == [ofp.ONF_BCT_OPEN_REQUEST, ofp.ONF_BCT_DISCARD_REQUEST]
    # nothing of the failed batch is left waiting; the next batch goes through
    assert switch.send_batch(lambda _d: [ofmsg.encode_add(FLOWS[1])]) == 1
