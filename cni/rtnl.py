"""A minimal rtnetlink client for the CNI's ADD/DEL path: veths, addresses, routes.

# why: pyroute2 (0.9) spends about 1 ms of Python per request and more to open a
# socket; an ADD made about ten requests, on both sides of the veth, which was a
# third of the server's time. The same requests built with `struct` cost tens of
# microseconds, and the pod's addresses and routes go in one datagram. CHECK, GC
# and the controller's node set-up keep using pyroute2 (cni/netns.py).

An `Rtnl` socket is bound to the network namespace it was created in. Requests
sent together are processed by the kernel in order; each is acknowledged, and
the first failure is raised as `RtnlError` (an OSError with the errno).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_NEWROUTE = 20, 24
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_IFALIAS = 1, 3, 4, 18, 20
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
RT_TABLE_MAIN, RTPROT_STATIC, RTN_UNICAST = 254, 4, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
IFF_UP = 0x1

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
# rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTMSG = struct.Struct("=BBBBBBBBI")
_NLATTR = struct.Struct("=HH")  # len, type
_ERRNO = struct.Struct("=i")
_RECV_SIZE = 65536

Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


class RtnlError(OSError):
    """A netlink request the kernel refused (``errno`` says why)."""


@dataclass(frozen=True)
class Link:
    """What a lookup returns: the link's index and MAC address."""

    index: int
    mac: str


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    size = _NLATTR.size + len(payload)
    return _NLATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


def _name(name: str) -> bytes:
    return name.encode() + b"\0"


def _u32(value: int) -> bytes:
    return struct.pack("=I", value)


def _ifinfo(index: int = 0, up: bool = False) -> bytes:
    flags = IFF_UP if up else 0
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, flags)


@dataclass(frozen=True)
class Request:
    """One message to send: type, extra flags, body (header struct + attributes), what for."""

    kind: int
    flags: int
    body: bytes
    what: str


class Rtnl:
    """A NETLINK_ROUTE socket in the network namespace of the thread that made it."""

    def __init__(self) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE
        )
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transact(self, requests: Sequence[Request]) -> list[bytes | None]:
        """Send `requests` in one datagram; return each reply (None for an ack).

        Raises RtnlError for the first request (in order) that failed.
        """
        seqs, out = [], []
        for req in requests:
            self._seq = (self._seq + 1) & 0xFFFFFFFF
            seqs.append(self._seq)
            size = _NLMSGHDR.size + len(req.body)
            out.append(_NLMSGHDR.pack(size, req.kind, NLM_F_REQUEST | req.flags, self._seq, 0))
            out.append(req.body)
        self._sock.sendall(b"".join(out))
        replies = self._collect(set(seqs))
        results: list[bytes | None] = []
        for seq, req in zip(seqs, requests, strict=True):
            reply = replies[seq]
            if isinstance(reply, int):
                raise RtnlError(reply, f"{req.what}: {os.strerror(reply)}")
            results.append(reply)
        return results

    def _collect(self, pending: set[int]) -> dict[int, bytes | int | None]:
        """Read until every sequence number got its reply, ack or error (an errno)."""
        got: dict[int, bytes | int | None] = {}
        while pending:
            data = self._sock.recv(_RECV_SIZE)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                size, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
                if size < _NLMSGHDR.size:
                    break
                body = data[offset + _NLMSGHDR.size : offset + size]
                offset += (size + 3) & ~3
                if seq not in pending:
                    continue
                pending.discard(seq)
                if kind == NLMSG_ERROR:
                    got[seq] = -_ERRNO.unpack_from(body)[0] or None  # errno 0 is an ack
                else:
                    got[seq] = body
        return got


def get_link(rt: Rtnl, name: str) -> Link | None:
    """Index and MAC of link `name`, or None when it does not exist."""
    req = Request(RTM_GETLINK, 0, _ifinfo() + attr(IFLA_IFNAME, _name(name)), f"get {name}")
    try:
        (reply,) = rt.transact([req])
    except RtnlError as exc:
        if exc.errno == errno.ENODEV:
            return None
        raise
    assert reply is not None
    index = _IFINFOMSG.unpack_from(reply)[2]
    mac = ""
    offset = _IFINFOMSG.size
    while offset + _NLATTR.size <= len(reply):
        size, kind = _NLATTR.unpack_from(reply, offset)
        if size < _NLATTR.size:
            break
        if kind & 0x3FFF == IFLA_ADDRESS:
            mac = reply[offset + _NLATTR.size : offset + size].hex(":")
        offset += (size + 3) & ~3
    return Link(index, mac)


def add_veth(rt: Rtnl, name: str, peer: str, mtu: int, peer_netns_fd: int) -> None:
    """Create veth `name` (down) here with its peer `peer` in the netns `peer_netns_fd`."""
    peer_body = (
        _ifinfo()
        + attr(IFLA_IFNAME, _name(peer))
        + attr(IFLA_MTU, _u32(mtu))
        + attr(IFLA_NET_NS_FD, _u32(peer_netns_fd))
    )
    info = attr(IFLA_INFO_KIND, b"veth") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_body))
    body = (
        _ifinfo()
        + attr(IFLA_IFNAME, _name(name))
        + attr(IFLA_MTU, _u32(mtu))
        + attr(IFLA_LINKINFO, info)
    )
    flags = NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    rt.transact([Request(RTM_NEWLINK, flags, body, f"create veth {name}/{peer}")])


def set_up(index: int, alias: str | None = None) -> Request:
    """A request bringing link `index` up (and setting its alias)."""
    body = _ifinfo(index, up=True)
    if alias is not None:
        body += attr(IFLA_IFALIAS, alias.encode())
    return Request(RTM_SETLINK, NLM_F_ACK, body, f"set link {index} up")


def set_up_by_name(name: str) -> Request:
    """A request bringing link `name` up."""
    return Request(
        RTM_SETLINK, NLM_F_ACK, _ifinfo(up=True) + attr(IFLA_IFNAME, _name(name)), f"{name} up"
    )


def del_link(rt: Rtnl, name: str) -> bool:
    """Delete link `name`; True when it existed. Idempotent."""
    body = _ifinfo() + attr(IFLA_IFNAME, _name(name))
    try:
        rt.transact([Request(RTM_DELLINK, NLM_F_ACK, body, f"delete {name}")])
    except RtnlError as exc:
        if exc.errno == errno.ENODEV:
            return False
        raise
    return True


def add_address(index: int, address: Address) -> Request:
    """A request adding `address` (with its prefix) to link `index`."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    packed = address.ip.packed
    body = _IFADDRMSG.pack(family, address.network.prefixlen, 0, 0, index)
    body += attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)
    return Request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body, f"add {address}")


def add_route(index: int, dst: Network, gateway: IPAddr | None) -> Request:
    """A request adding a main-table route to `dst` out of link `index` (via `gateway`)."""
    family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
    scope = RT_SCOPE_UNIVERSE if gateway is not None else RT_SCOPE_LINK
    body = _RTMSG.pack(
        family, dst.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, scope, RTN_UNICAST, 0
    )
    if dst.prefixlen:
        body += attr(RTA_DST, dst.network_address.packed)
    if gateway is not None:
        body += attr(RTA_GATEWAY, gateway.packed)
    body += attr(RTA_OIF, _u32(index))
    via = f" via {gateway}" if gateway is not None else ""
    return Request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body, f"route {dst}{via}")
