"""Input state of the flow compiler, as frozen dataclasses.

Values are strings as they arrive from Kubernetes and OVSDB (``"10.244.1.0/24"``,
``"aa:bb:cc:00:00:01"``); each class validates and normalizes them once at
construction and raises ``ValueError`` naming the bad key. Only IPv4 for now.

Modes:

* ``overlay``  - pod traffic between nodes goes through the tunnel port
  (``tun0``, VXLAN or Geneve, created with ``options:remote_ip=flow`` and, if
  ``vni`` is set, ``options:key=flow``); the uplink is not on br-int.
* ``routing`` / ``underlay`` - pod IPs are routable on the node network; br-int
  has the uplink port and sends to the remote node's uplink MAC directly. In
  ``underlay`` the pod CIDRs are ranges of the fabric's own subnet: the node
  also answers the fabric's ARP for its pod CIDR (flows.node), so a fabric host
  without Sluice reaches pods with no route of its own.
* ``hybrid`` - both: br-int has the tunnel port and the uplink; a remote node
  on this node's uplink subnet (``uplink_subnet``) is routed, any other node is
  reached through the tunnel (so is a same-subnet node that has not published
  its uplink MAC yet).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final, Literal, get_args

from flows import oxm
from ovsdb import schema

Mode = Literal["overlay", "routing", "underlay", "hybrid"]
TunnelType = Literal["vxlan", "geneve"]
MAX_VNI: Final = (1 << 24) - 1
MAX_OFPORT: Final = 0xFFFFFF00


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _ip(key: str, value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"{key}: {value!r} is not an IPv4 address") from None


def _net(key: str, value: str) -> str:
    try:
        return str(ipaddress.IPv4Network(value))
    except ValueError:
        raise ValueError(f"{key}: {value!r} is not an IPv4 network (host bits set?)") from None


def _mac(key: str, value: str) -> str:
    try:
        return str(oxm.normalize("eth_src", value)[0])
    except ValueError:
        raise ValueError(f"{key}: {value!r} is not a MAC address") from None


def _ofport(key: str, value: int, low: int = 1, high: int = MAX_OFPORT) -> None:
    if not low <= value <= high:
        raise ValueError(f"{key}: ofport {value} not in {low}..{high}")


def _nets(key: str, values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    if isinstance(values, str) or not values:
        raise ValueError(f"{key}: give a non-empty list of CIDRs")
    return tuple(_net(f"{key}[{i}]", v) for i, v in enumerate(values))


def in_any(ip: str, cidrs: tuple[str, ...]) -> bool:
    """Return whether IPv4 address ``ip`` lies in one of ``cidrs``."""
    address = ipaddress.IPv4Address(ip)
    return any(address in ipaddress.IPv4Network(c) for c in cidrs)


@dataclass(frozen=True)
class NodeConfig:
    """This node: addressing, mode and br-int port numbers."""

    name: str
    node_ip: str
    pod_cidrs: tuple[str, ...]
    gateway_ip: str  # address of gw0, inside pod_cidrs[0]; the pods' default gateway
    gateway_mac: str
    cluster_cidr: str
    mode: Mode = "overlay"
    tunnel_type: TunnelType = "geneve"
    vni: int | None = None  # tun_id set on tunnelled packets; None = port's own key
    service_cidr: str | None = None
    uplink_mac: str | None = None  # MAC of the uplink port; required unless overlay
    uplink_subnet: str | None = None  # the uplink's IPv4 subnet; required in hybrid mode
    gateway_ofport: int = schema.GATEWAY_OFPORT
    tunnel_ofport: int = schema.TUNNEL_OFPORT
    uplink_ofport: int = schema.UPLINK_OFPORT

    def __post_init__(self) -> None:
        _set(self, "node_ip", _ip("node_ip", self.node_ip))
        _set(self, "pod_cidrs", _nets("pod_cidrs", self.pod_cidrs))
        _set(self, "cluster_cidr", _net("cluster_cidr", self.cluster_cidr))
        _set(self, "gateway_ip", _ip("gateway_ip", self.gateway_ip))
        _set(self, "gateway_mac", _mac("gateway_mac", self.gateway_mac))
        if self.service_cidr is not None:
            _set(self, "service_cidr", _net("service_cidr", self.service_cidr))
        if self.uplink_mac is not None:
            _set(self, "uplink_mac", _mac("uplink_mac", self.uplink_mac))
        if self.uplink_subnet is not None:
            _set(self, "uplink_subnet", _net("uplink_subnet", self.uplink_subnet))
        self._check()

    def _check(self) -> None:
        if self.mode not in get_args(Mode):
            raise ValueError(f"mode: {self.mode!r} not one of {get_args(Mode)}")
        if self.tunnel_type not in get_args(TunnelType):
            raise ValueError(f"tunnel_type: {self.tunnel_type!r} not one of {get_args(TunnelType)}")
        if self.vni is not None and not 0 <= self.vni <= MAX_VNI:
            raise ValueError(f"vni: {self.vni} not in 0..{MAX_VNI}")
        if self.mode != "overlay" and self.uplink_mac is None:
            raise ValueError(f"uplink_mac: required in {self.mode} mode")
        if self.mode == "hybrid" and self.uplink_subnet is None:
            raise ValueError("uplink_subnet: required in hybrid mode")
        cluster = ipaddress.IPv4Network(self.cluster_cidr)
        for cidr in self.pod_cidrs:
            if not ipaddress.IPv4Network(cidr).subnet_of(cluster):
                raise ValueError(f"pod_cidrs: {cidr} is not inside cluster_cidr {cluster}")
        first = ipaddress.IPv4Network(self.pod_cidrs[0])
        gateway = ipaddress.IPv4Address(self.gateway_ip)
        if gateway not in first or gateway in (first.network_address, first.broadcast_address):
            raise ValueError(f"gateway_ip: {gateway} is not a host address of {first}")
        ports = {"gateway_ofport": self.gateway_ofport, "tunnel_ofport": self.tunnel_ofport}
        ports["uplink_ofport"] = self.uplink_ofport
        for key, port in ports.items():
            _ofport(key, port, high=schema.POD_OFPORT_MIN - 1)
        if len(set(ports.values())) != len(ports):
            raise ValueError(f"ofports must differ: {ports}")

    @property
    def overlay(self) -> bool:
        """Whether all inter-node pod traffic is tunnelled (no uplink on br-int)."""
        return self.mode == "overlay"

    @property
    def tunnels(self) -> bool:
        """Whether br-int has the tunnel port (overlay, hybrid)."""
        return self.mode in ("overlay", "hybrid")

    def routes_to(self, remote: RemoteNode) -> bool:
        """Whether pod traffic to ``remote`` goes out of the uplink unencapsulated."""
        if self.overlay:
            return False
        if self.mode != "hybrid":
            return True
        return remote.uplink_mac is not None and in_any(remote.node_ip, (str(self.uplink_subnet),))


@dataclass(frozen=True)
class PodPort:
    """One pod interface plugged into br-int."""

    ofport: int
    mac: str
    ips: tuple[str, ...]  # addresses; "10.244.1.5/24" (OVSDB form) is accepted
    namespace: str
    name: str
    container_id: str
    ifname: str = "eth0"

    def __post_init__(self) -> None:
        _ofport("ofport", self.ofport, schema.POD_OFPORT_MIN, schema.POD_OFPORT_MAX)
        _set(self, "mac", _mac("mac", self.mac))
        if isinstance(self.ips, str) or not self.ips:
            raise ValueError("ips: give a non-empty list of IPv4 addresses")
        ips = tuple(_ip(f"ips[{i}]", ip.split("/")[0]) for i, ip in enumerate(self.ips))
        _set(self, "ips", ips)

    @property
    def key(self) -> str:
        """Flow-cache key of this interface (CNI identity: container id + ifname)."""
        return f"pod/{self.container_id}/{self.ifname}"


@dataclass(frozen=True)
class RemoteNode:
    """Another node of the cluster whose pod CIDRs we route to."""

    name: str
    node_ip: str
    pod_cidrs: tuple[str, ...]
    uplink_mac: str | None = None  # needed in routing/underlay mode

    def __post_init__(self) -> None:
        _set(self, "node_ip", _ip("node_ip", self.node_ip))
        _set(self, "pod_cidrs", _nets("pod_cidrs", self.pod_cidrs))
        if self.uplink_mac is not None:
            _set(self, "uplink_mac", _mac("uplink_mac", self.uplink_mac))

    @property
    def key(self) -> str:
        """Flow-cache key of this remote node."""
        return f"node/{self.name}"
