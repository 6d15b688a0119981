"""Netlink plumbing for pods: veth pairs, addresses, routes, MTU, checksum offload.

# why: a netlink socket stays bound to the network namespace it was created in.
# We switch only the *calling thread* into the pod's namespace (setns affects one
# thread), create the sockets, and switch straight back. Each CNI request runs on
# its own short-lived server thread, so no other work ever sees a foreign netns.

Everything netlink is encoded and decoded by pyroute2. ADD keeps the requests
few: the veth is created with its peer already in the pod and both MACs chosen
here; the pod's addresses and routes go in one datagram (cni.nlbatch says why
not through pyroute2's IPRoute). CHECK, GC and the controller's node set-up use
IPRoute.
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
from functools import partial
from typing import TypedDict

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from cni import nlbatch

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
    """An open pod network namespace: its fd and sockets in it.

    `rt` is the plain rtnetlink socket ADD sends its batch on (cni.nlbatch);
    `ipr` (pyroute2, for CHECK's queries) is opened on first use and, like every
    pyroute2 0.9 socket, belongs to the thread that opened it.
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
                self.rt = nlbatch.open_socket()
                self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except BaseException:
            os.close(self.fd)
            raise

    @property
    def ipr(self) -> IPRoute:
        """A pyroute2 socket inside this netns (for the calling thread)."""
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
        """Index of link `name` in this netns, or None.

        # why: ADD asks this before it starts the IPAM delegate, so it should be
        # cheap; the C library's ioctl lookup is, and needs no netlink socket.
        """
        with _inside(self.fd, self.path):
            try:
                return socket.if_nametoindex(name)
            except OSError:
                return None

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
    """A created veth: host side name/MAC and container side name/index/MAC."""

    host_name: str
    host_mac: str
    peer_name: str
    peer_index: int
    peer_mac: str


def ensure_veth(
    host: socket.socket, pod: PodNetns, host_name: str, peer_name: str, mtu: int, alias: str
) -> VethPair:
    """Create a veth with `peer_name` inside the pod netns; replaces a stale host end.

    `host` is a cni.nlbatch socket in the host's netns. A host link called
    `host_name` can only be a leftover of an earlier attempt for the same
    container and interface (the name is derived from them), so it is removed
    when the name is taken. The peer name must not exist in the pod (the caller
    checks). The host end comes up isolated from the host's IP stack; the pod end
    stays down.
    """
    # why: with both MACs chosen here (the kind the kernel would pick: random,
    # locally administered) ADD needs no netlink request to learn them, and udev
    # (MACAddressPolicy) leaves a MAC that was set, not random, alone.
    host_mac, peer_mac = random_mac(), random_mac()
    create = partial(nlbatch.new_veth, host_name, host_mac, peer_name, peer_mac, mtu, pod.fd)
    try:
        nlbatch.send_batch(host, [create()])
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise
        nlbatch.delete_link(host, host_name)
        nlbatch.send_batch(host, [create()])
    peer_index = pod.link_index(peer_name)
    if peer_index is None:
        raise RuntimeError(f"veth {host_name}/{peer_name} vanished right after creation")
    isolate_host_end(host_name)
    nlbatch.send_batch(host, [nlbatch.link_up(name=host_name, alias=alias)])
    return VethPair(host_name, host_mac, peer_name, peer_index, peer_mac)


def random_mac() -> str:
    """A random unicast, locally administered MAC address."""
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFE) | 0x02
    return octets.hex(":")


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


def bring_up_pod_interface(pod: PodNetns, index: int) -> None:
    """Bring lo and the pod interface (link `index`) up, in one datagram."""
    nlbatch.send_batch(pod.rt, [nlbatch.link_up(name="lo"), nlbatch.link_up(index=index)])


def configure_pod_interface(
    pod: PodNetns,
    index: int,
    addresses: Sequence[Address],
    routes: Sequence[tuple[Network, IPAddr | None]],
    neighbours: Sequence[tuple[IPAddr, str]] = (),
) -> None:
    """Add addresses to link `index`, then routes, then permanent neighbours
    (IP, MAC), in one datagram.

    Raises NetlinkError naming the first request the kernel refused.
    """
    nlbatch.send_batch(pod.rt, nlbatch.address_requests(index, addresses, routes, neighbours))


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
