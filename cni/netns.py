"""Netlink plumbing for pods: veth pairs, addresses, routes, MTU, checksum offload.

# why: a netlink socket stays bound to the network namespace it was created in.
# We switch only the *calling thread* into the pod's namespace (setns affects one
# thread), create the sockets, and switch straight back. Each CNI request runs on
# its own short-lived server thread, so no other work ever sees a foreign netns.

ADD and DEL go through `cni.rtnl` (a few raw requests); CHECK, GC and the
controller's node set-up read links, addresses and routes with pyroute2.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import fcntl
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypedDict

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from cni import rtnl
from cni.rtnl import Rtnl, RtnlError

_CLONE_NEWNET = 0x40000000
_SIOCETHTOOL = 0x8946
_ETHTOOL_GTXCSUM = 0x16
_ETHTOOL_STXCSUM = 0x17
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsMissing(Exception):
    """The network namespace path does not exist or is not a netns."""


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(path: str) -> Iterator[None]:
    """Run the body with the calling thread inside the netns at `path`."""
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise NetnsMissing(path) from exc
    try:
        with _inside(target, path):
            yield
    finally:
        os.close(target)


@contextlib.contextmanager
def _inside(fd: int, path: str) -> Iterator[None]:
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _setns(fd)
        except OSError as exc:
            raise NetnsMissing(f"{path}: {exc}") from exc
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(original)


class PodNetns:
    """An open pod network namespace: netlink and ioctl sockets in it.

    `rt` is the raw netlink socket ADD uses; `ipr` (pyroute2, for CHECK's
    queries) is opened on first use.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1
        self._ipr: IPRoute | None = None
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise NetnsMissing(path) from exc
        try:
            with _inside(self.fd, path):
                self.rt = Rtnl()
                self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except BaseException:
            os.close(self.fd)
            raise

    @property
    def ipr(self) -> IPRoute:
        """A pyroute2 socket inside this netns."""
        if self._ipr is None:
            with _inside(self.fd, self.path):
                self._ipr = IPRoute()
        return self._ipr

    def close(self) -> None:
        """Close the sockets and the namespace fd."""
        if self._ipr is not None:
            self._ipr.close()
        self.rt.close()
        self.sock.close()
        os.close(self.fd)

    def __enter__(self) -> PodNetns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def link_index(self, name: str) -> int | None:
        """Index of link `name` in this netns, or None."""
        link = rtnl.get_link(self.rt, name)
        return link.index if link is not None else None

    def set_tx_checksum(self, ifname: str, enabled: bool) -> None:
        """Turn TX checksum offload of `ifname` on or off (ethtool -K IF tx on|off)."""
        _ethtool_value(self.sock, ifname, _ETHTOOL_STXCSUM, int(enabled))

    def tx_checksum(self, ifname: str) -> bool:
        """Whether TX checksum offload is on for `ifname`."""
        return bool(_ethtool_value(self.sock, ifname, _ETHTOOL_GTXCSUM, 0))


def _ethtool_value(sock: socket.socket, ifname: str, cmd: int, value: int) -> int:
    # struct ethtool_value {u32 cmd; u32 data;} passed through ifreq.ifr_data
    buf = array.array("I", [cmd, value])
    addr, _ = buf.buffer_info()
    ifreq = struct.pack("16sP", ifname.encode(), addr)
    fcntl.ioctl(sock.fileno(), _SIOCETHTOOL, ifreq)
    return buf[1]


def link_index(ipr: IPRoute, name: str) -> int | None:
    """Index of link `name`, or None when absent."""
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def del_link_if_exists(ipr: IPRoute, name: str) -> bool:
    """Delete link `name`; True when it existed. Idempotent."""
    index = link_index(ipr, name)
    if index is None:
        return False
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise
        return False
    return True


@dataclass(frozen=True)
class VethPair:
    """A created veth: host side name/index/MAC and container side name/index/MAC."""

    host_name: str
    host_index: int
    host_mac: str
    peer_name: str
    peer_index: int
    peer_mac: str


def ensure_veth(
    host: Rtnl, pod: PodNetns, host_name: str, peer_name: str, mtu: int, alias: str
) -> VethPair:
    """Create a veth with `peer_name` inside the pod netns; replaces a stale host end.

    A host link called `host_name` can only be a leftover of an earlier attempt for
    the same container and interface (the name is derived from them), so it is
    removed when the name is taken. The peer name must not exist in the pod (the
    caller checks). The host end comes up isolated from the host's IP stack.
    """
    try:
        rtnl.add_veth(host, host_name, peer_name, mtu, pod.fd)
    except RtnlError as exc:
        if exc.errno != errno.EEXIST:
            raise
        rtnl.del_link(host, host_name)
        rtnl.add_veth(host, host_name, peer_name, mtu, pod.fd)
    host_link = rtnl.get_link(host, host_name)
    peer_link = rtnl.get_link(pod.rt, peer_name)
    if host_link is None or peer_link is None:
        raise RuntimeError(f"veth {host_name}/{peer_name} vanished right after creation")
    isolate_host_end(host_name)
    host.transact([rtnl.set_up(host_link.index, alias)])
    return VethPair(
        host_name=host_name,
        host_index=host_link.index,
        host_mac=host_link.mac,
        peer_name=peer_name,
        peer_index=peer_link.index,
        peer_mac=peer_link.mac,
    )


def isolate_host_end(name: str) -> None:
    """Keep the host's IP stack off a bridge port: no ARP answers, no forwarding, no IPv6.

    # why: on the userspace datapath the host end of a pod veth is still a live
    # kernel interface. Without this the host answers the pod's ARP for the
    # gateway with the veth's MAC and routes pod traffic around OVS.
    """
    for path, value in (
        (f"/proc/sys/net/ipv4/conf/{name}/arp_ignore", "8"),
        (f"/proc/sys/net/ipv4/conf/{name}/forwarding", "0"),
        (f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "1"),
    ):
        try:
            with open(path, "w") as f:
                f.write(value)
        except FileNotFoundError:
            if "ipv6" not in path:  # a kernel without IPv6 has no such file
                raise


Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


def configure_pod_interface(
    pod: PodNetns,
    index: int,
    addresses: Sequence[Address],
    routes: Sequence[tuple[Network, IPAddr | None]],
) -> None:
    """Bring lo and the pod interface up, add addresses, then routes (one datagram)."""
    requests = [rtnl.set_up_by_name("lo"), rtnl.set_up(index)]
    requests += [rtnl.add_address(index, addr) for addr in addresses]
    requests += [rtnl.add_route(index, dst, gw) for dst, gw in routes]
    pod.rt.transact(requests)


def link_addresses(ipr: IPRoute, index: int) -> set[Address]:
    """The addresses configured on link `index`."""
    out: set[Address] = set()
    for msg in ipr.get_addr(index=index):
        out.add(ipaddress.ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}"))
    return out


def link_routes(ipr: IPRoute, index: int) -> set[tuple[Network, IPAddr | None]]:
    """(destination, gateway) of the main-table routes leaving through link `index`."""
    out: set[tuple[Network, IPAddr | None]] = set()
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in ipr.get_routes(family=family, oif=index, table=254):
            dst = msg.get_attr("RTA_DST")
            net = ipaddress.ip_network(
                f"{dst or ('::' if family == socket.AF_INET6 else '0.0.0.0')}/{msg['dst_len']}"
            )
            gw = msg.get_attr("RTA_GATEWAY")
            out.add((net, ipaddress.ip_address(gw) if gw else None))
    return out


class LinkInfo(TypedDict):
    """What `link_info` reports about a link."""

    name: str
    mac: str
    mtu: int
    up: bool
    kind: str | None
    alias: str | None


def link_info(ipr: IPRoute, index: int) -> LinkInfo:
    """Name, MAC, MTU, state, kind and alias of link `index`."""
    msg = ipr.get_links(index)[0]
    info = msg.get_attr("IFLA_LINKINFO")
    return {
        "name": msg.get_attr("IFLA_IFNAME"),
        "mac": msg.get_attr("IFLA_ADDRESS"),
        "mtu": msg.get_attr("IFLA_MTU"),
        "up": bool(msg["flags"] & 1),
        "kind": info.get_attr("IFLA_INFO_KIND") if info else None,
        "alias": msg.get_attr("IFLA_IFALIAS"),
    }


def links_with_alias_prefix(ipr: IPRoute, prefix: str) -> dict[str, str]:
    """Map of link name → alias for links whose alias starts with `prefix`."""
    out: dict[str, str] = {}
    for msg in ipr.get_links():
        alias = msg.get_attr("IFLA_IFALIAS")
        if alias and alias.startswith(prefix):
            out[msg.get_attr("IFLA_IFNAME")] = alias
    return out
