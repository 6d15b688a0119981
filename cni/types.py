"""CNI protocol types: spec versions, error codes, typed errors and results.

Errors are typed inside the plugin (`CniError`) and turned into the spec's JSON
only at the boundary (`cni.skel`). Anything else that escapes becomes code 999.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

SUPPORTED_VERSIONS: tuple[str, ...] = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]

# Well-known error codes (CNI spec "Well-known Error Codes").
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN_LATER = 11
ERR_NOT_AVAILABLE = 50
ERR_NOT_AVAILABLE_LIMITED = 51
ERR_INTERNAL = 999
# Plugin-specific codes (100+), documented in docs/cni.md.
ERR_IFNAME_EXISTS = 100
ERR_OVS = 101
ERR_IPAM = 102
ERR_NETLINK = 103
ERR_CHECK_FAILED = 104


class CniError(Exception):
    """An error with a CNI error code; `msg` names the field or variable at fault."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{msg}: {details}" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict[str, Any]:
        """Return the spec's error object for `cni_version`."""
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


def version_tuple(version: str) -> tuple[int, int, int]:
    """Parse a semantic version "X.Y.Z"; raise CniError(6) when it is not one."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise CniError(ERR_DECODE, "cniVersion is not a semantic version", repr(version))
    return int(parts[0]), int(parts[1]), int(parts[2])


def version_at_least(version: str, minimum: str) -> bool:
    """True when `version` >= `minimum`."""
    return version_tuple(version) >= version_tuple(minimum)


@dataclass(frozen=True)
class IPConfig:
    """One address of a result: CIDR address, optional gateway, interface index."""

    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    interface: int | None = None


@dataclass(frozen=True)
class Route:
    """One route of a result."""

    dst: ipaddress.IPv4Network | ipaddress.IPv6Network
    gw: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None


@dataclass(frozen=True)
class Interface:
    """One interface of a result; `sandbox` is set for the container side."""

    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int | None = None


@dataclass
class Result:
    """A CNI result, convertible to any supported spec version."""

    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: dict[str, Any] = field(default_factory=dict)

    def to_json(self, cni_version: str) -> dict[str, Any]:
        """Render for `cni_version` (0.3.x/0.4.0 carry `version` on ips)."""
        v1 = version_at_least(cni_version, "1.0.0")
        out: dict[str, Any] = {"cniVersion": cni_version}
        if self.interfaces:
            out["interfaces"] = [_iface_json(i, cni_version) for i in self.interfaces]
        out["ips"] = [_ip_json(ip, v1) for ip in self.ips]
        if self.routes:
            out["routes"] = [_route_json(r) for r in self.routes]
        out["dns"] = dict(self.dns)
        return out


def _iface_json(iface: Interface, cni_version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": iface.name}
    if iface.mac:
        out["mac"] = iface.mac
    if iface.sandbox:
        out["sandbox"] = iface.sandbox
    if iface.mtu is not None and version_at_least(cni_version, "1.1.0"):
        out["mtu"] = iface.mtu
    return out


def _ip_json(ip: IPConfig, v1: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"address": str(ip.address)}
    if not v1:
        out["version"] = str(ip.address.version)
    if ip.gateway is not None:
        out["gateway"] = str(ip.gateway)
    if ip.interface is not None:
        out["interface"] = ip.interface
    return out


def _route_json(route: Route) -> dict[str, Any]:
    out: dict[str, Any] = {"dst": str(route.dst)}
    if route.gw is not None:
        out["gw"] = str(route.gw)
    return out


def parse_result(data: Any, where: str) -> Result:
    """Parse a result of any supported version (an IPAM answer or a prevResult).

    `where` names the document in errors, e.g. "prevResult" or "ipam result".
    """
    if not isinstance(data, dict):
        raise CniError(ERR_DECODE, f"{where} is not a JSON object")
    try:
        return Result(
            interfaces=[_parse_iface(i) for i in data.get("interfaces") or []],
            ips=[_parse_ip(i) for i in data.get("ips") or []],
            routes=[_parse_route(r) for r in data.get("routes") or []],
            dns=dict(data.get("dns") or {}),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CniError(ERR_DECODE, f"{where} is malformed", str(exc)) from exc


def _parse_iface(data: dict[str, Any]) -> Interface:
    return Interface(
        name=str(data["name"]),
        mac=str(data.get("mac", "")),
        sandbox=str(data.get("sandbox", "")),
        mtu=int(data["mtu"]) if data.get("mtu") is not None else None,
    )


def _parse_ip(data: dict[str, Any]) -> IPConfig:
    gw = data.get("gateway")
    idx = data.get("interface")
    return IPConfig(
        address=ipaddress.ip_interface(data["address"]),
        gateway=ipaddress.ip_address(gw) if gw else None,
        interface=int(idx) if idx is not None else None,
    )


def _parse_route(data: dict[str, Any]) -> Route:
    gw = data.get("gw")
    return Route(dst=ipaddress.ip_network(data["dst"]), gw=ipaddress.ip_address(gw) if gw else None)
