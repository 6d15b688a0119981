"""``ofmsg.recookie_flow`` against a real ovs-vswitchd: cookies move, flows stay.

Round 1 is installed with ``ovs-ofctl add-flows``; after a second every flow is
moved to round 2 by sending the os-ken-built Nicira flow-mods over a raw
OpenFlow 1.3 connection to the bridge's management socket. The dump must show
round-2 cookies, unchanged actions and durations that kept counting; the
round-1 delete must then remove nothing.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from os_ken.ofproto import ofproto_protocol, ofproto_v1_3

from flows import cookies, ofmsg
from flows.desired import desired_flows
from flows.ir import Flow
from flows.render import render
from sandbox.ovs import OvsInstance
from tests.conftest import require_root
from tests.unit.flows.sample import NODE, POD_A, POD_B, REMOTE, all_flows

OFP_HEADER = struct.Struct("!BBHI")
OFPT_ERROR, OFPT_BARRIER_REPLY = 1, 21
_DUMP_STATS = re.compile(r"(duration|n_packets|n_bytes|idle_age|hard_age)=[^,]*, ")


def flows_of(round_: int) -> list[Flow]:
    node = replace(NODE, vni=5001)
    flows = all_flows(desired_flows(node, [POD_A, POD_B], [REMOTE], round_=round_))
    return sorted(flows, key=lambda f: render(f, names=False).split(" ", 1)[1])


class OpenFlowConn:
    """A bare OpenFlow 1.3 connection to a bridge's ``.mgmt`` socket."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.sock.sendall(OFP_HEADER.pack(4, 0, OFP_HEADER.size, 1))  # OFPT_HELLO
        version, msg_type, _body = self.recv()
        assert (version, msg_type) == (4, 0), "no OpenFlow 1.3 hello from the switch"

    def recv(self) -> tuple[int, int, bytes]:
        version, msg_type, length, _xid = OFP_HEADER.unpack(self._read(OFP_HEADER.size))
        return version, msg_type, self._read(length - OFP_HEADER.size)

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "switch closed the OpenFlow connection"
            data += chunk
        return data

    def send_and_barrier(self, msgs: list[bytes]) -> None:
        """Send ``msgs`` and a barrier; fail on any OFPT_ERROR before the reply."""
        self.sock.sendall(b"".join(msgs) + OFP_HEADER.pack(4, 20, OFP_HEADER.size, 0xBA))
        while True:
            _version, msg_type, body = self.recv()
            if msg_type == OFPT_ERROR:
                err_type, code = struct.unpack_from("!HH", body)
                pytest.fail(f"switch answered OFPT_ERROR type={err_type} code={code}")
            if msg_type == OFPT_BARRIER_REPLY:
                return

    def close(self) -> None:
        self.sock.close()


def wire(msg) -> bytes:
    msg.serialize()
    return bytes(msg.buf)


def dump(ovs: OvsInstance, bridge: str) -> dict[str, float]:
    """Return ``{flow as render(names=False) prints it: duration in seconds}``."""
    out = ovs.ofctl("-O", "OpenFlow13", "--no-names", "dump-flows", bridge)
    flows = {}
    for line in out.splitlines():
        if found := re.search(r"duration=([\d.]+)s", line):
            flows[_DUMP_STATS.sub("", line.strip())] = float(found[1])
    return flows


def without_cookie(line: str) -> str:
    """A dumped flow without its cookie: table, priority, match and actions."""
    return line.split(", ", 1)[1]


@pytest.fixture
def bridge(ovs: OvsInstance, ifname: Callable[[str], str]) -> Iterator[str]:
    require_root()  # why: the bridge's netdev internal port is a TAP device
    name = ifname("br")
    ovs.vsctl(
        "add-br",
        name,
        "--",
        "set",
        "bridge",
        name,
        "datapath_type=netdev",
        "protocols=OpenFlow13",
        "fail_mode=secure",
    )
    # why: ovs-vsctl can return before vswitchd has opened the bridge's
    # management socket; ovs-ofctl then says "not a bridge or a socket".
    mgmt = ovs.workdir / f"{name}.mgmt"
    deadline = time.monotonic() + 10
    while not mgmt.exists():
        assert time.monotonic() < deadline, f"{mgmt} did not appear"
        time.sleep(0.02)
    yield name
    ovs.vsctl("del-br", name)  # why: before ``ifname`` checks for leftover links


def test_recookie_moves_every_flow_to_the_new_round_in_place(
    ovs: OvsInstance, bridge: str, tmp_path: Path
):
    dp = ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION)
    old, new = flows_of(1), flows_of(2)
    assert [f.identity for f in old] == [f.identity for f in new]
    text = tmp_path / "round1.txt"
    text.write_text("".join(render(f, names=False) + "\n" for f in old))
    ovs.ofctl("-O", "OpenFlow13", "add-flows", bridge, str(text))
    before = dump(ovs, bridge)
    assert set(before) == {render(f, names=False) for f in old}
    time.sleep(1.1)

    conn = OpenFlowConn(ovs.workdir / f"{bridge}.mgmt")
    try:
        conn.send_and_barrier(
            [wire(ofmsg.recookie_flow(dp, n, o.cookie)) for n, o in zip(new, old, strict=True)]
        )
        after = dump(ovs, bridge)
        assert set(after) == {render(f, names=False) for f in new}
        assert {without_cookie(line) for line in after} == {without_cookie(line) for line in before}
        assert {cookies.round_of(int(line[7:].split(",")[0], 16)) for line in after} == {2}
        assert min(after.values()) >= 1.0, "a moved flow was re-added: its duration restarted"

        conn.send_and_barrier([wire(ofmsg.delete_round(dp, 1))])
        assert dump(ovs, bridge).keys() == after.keys()
    finally:
        conn.close()


def test_recookie_with_a_stale_old_cookie_changes_nothing(ovs: OvsInstance, bridge: str):
    dp = ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION)
    flow = next(f for f in flows_of(1) if f.match and f.table.table_id == 1)
    ovs.ofctl("-O", "OpenFlow13", "add-flow", bridge, render(flow, names=False))
    other = replace(flow, cookie=cookies.make(2, cookies.Category.POD, 99))
    conn = OpenFlowConn(ovs.workdir / f"{bridge}.mgmt")
    try:
        wrong = [
            ofmsg.recookie_flow(dp, other, flow.cookie ^ 1),  # other object id
            ofmsg.recookie_flow(dp, other, cookies.with_table(flow.cookie, 0)),  # other table
            ofmsg.recookie_flow(dp, replace(other, priority=7), flow.cookie),  # not installed
        ]
        conn.send_and_barrier([wire(m) for m in wrong])
    finally:
        conn.close()
    assert set(dump(ovs, bridge)) == {render(flow, names=False)}


def test_recookie_takes_over_the_cookie_0_normal_flow_of_a_new_bridge(
    ovs: OvsInstance, bridge: str
):
    # why: on a new bridge the reconciler finds OVS's own table-0 priority-0
    # NORMAL flow (cookie 0) where the Classifier miss flow belongs.
    dp = ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION)
    ovs.ofctl("-O", "OpenFlow13", "add-flow", bridge, "table=0,priority=0,actions=NORMAL")
    miss = next(f for f in flows_of(2) if f.table.table_id == 0 and f.priority == 0)
    conn = OpenFlowConn(ovs.workdir / f"{bridge}.mgmt")
    try:
        conn.send_and_barrier([wire(ofmsg.recookie_flow(dp, miss, 0))])
    finally:
        conn.close()
    assert set(dump(ovs, bridge)) == {render(miss, names=False)}
