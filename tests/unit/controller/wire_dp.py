"""A datapath double that keeps the exact byte stream a Switch sends, and a reader for it.

``WireDatapath`` behaves like os-ken's ``Datapath`` at the edge the Switch uses:
``set_xid`` numbers messages, ``send_msg`` serializes an os-ken message,
``send`` queues raw bytes; everything lands in one byte stream, in order.
Optionally it plays the switch: it answers barriers and flow-stats requests.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

ONF_ID = 0x4F4E4600
NX_ID = 0x2320


@dataclass(frozen=True)
class Wire:
    """One OpenFlow message read back from the stream."""

    msg_type: int
    xid: int
    data: bytes
    inner: Wire | None = None  # the message inside an ONF bundle-add

    @property
    def experimenter(self) -> tuple[int, int]:
        """(experimenter id, exp_type) of an OFPT_EXPERIMENTER message."""
        vendor, subtype = struct.unpack_from("!II", self.data, 8)
        return vendor, subtype

    @property
    def flow_mod_command(self) -> int:
        """The command byte of an OFPT_FLOW_MOD."""
        return self.data[25]


def read_messages(stream: bytes) -> list[Wire]:
    """Split a byte stream into messages; bundle-adds carry their inner message."""
    out, at = [], 0
    while at < len(stream):
        _version, msg_type, length, xid = struct.unpack_from("!BBHI", stream, at)
        data = stream[at : at + length]
        inner = None
        if msg_type == ofp.OFPT_EXPERIMENTER and struct.unpack_from("!II", data, 8) == (
            ONF_ID,
            ofp.ONF_ET_BUNDLE_ADD_MESSAGE,
        ):
            inner = read_messages(data[24:])[0]
        out.append(Wire(msg_type, xid, data, inner))
        at += length
    return out


class WireDatapath:
    """os-ken's Datapath edge, recording bytes; `switch` set means it answers too."""

    ofproto = ofp
    ofproto_parser = parser
    id = 1

    def __init__(self, dump: Callable[[], list[Any]] | None = None) -> None:
        self.xid = 0
        self.stream = bytearray()
        self.switch: Any = None
        self.dump = dump or list

    def set_xid(self, msg: Any) -> int:
        self.xid = (self.xid + 1) & ofp.MAX_XID
        msg.set_xid(self.xid)
        return self.xid

    def send(self, buf: bytes, close_socket: bool = False) -> bool:
        self.stream += buf
        return True

    def send_msg(self, msg: Any, close_socket: bool = False) -> bool:
        assert isinstance(msg, parser.MsgBase)
        if msg.xid is None:
            self.set_xid(msg)
        msg.serialize()
        self.stream += msg.buf
        if self.switch is not None and isinstance(msg, parser.OFPBarrierRequest):
            self.switch.barrier_reply(msg.xid)
        if self.switch is not None and isinstance(msg, parser.OFPFlowStatsRequest):
            self.switch.stats_reply(msg.xid, self.dump(), more=False)
        return True

    def messages(self) -> list[Wire]:
        """Everything sent so far."""
        return read_messages(bytes(self.stream))
