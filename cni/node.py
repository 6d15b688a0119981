"""What the CNI server knows about its node, and the pod identity from CNI_ARGS."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

# Overhead of each encapsulation on top of the inner Ethernet frame's IP MTU.
# VXLAN: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14 = 50.
# Geneve: outer IPv4 20 + UDP 8 + Geneve base 8 + inner Ethernet 14 = 50 (no options;
# Sluice sends none).
TUNNEL_OVERHEAD = {"vxlan": 50, "geneve": 50}
ALIAS_PREFIX = "sluice/"


@dataclass(frozen=True)
class NodeNetwork:
    """The node facts a CNI request needs.

    `pod_cidrs` is empty until the node's podCIDR is known (ADD then answers
    "try again later"). `tx_checksum_off` is true on the netdev datapath without
    userspace TSO, where TCP fails unless the pod veth computes its checksums.
    `gateway_mac` lets ADD give the pod a permanent neighbour entry for gw0.
    """

    bridge: str
    pod_cidrs: tuple[str, ...]
    mtu: int
    tx_checksum_off: bool
    state_dir: str
    ovsdb_timeout: float = 10.0
    gateway_mac: str = ""  # gw0's MAC, once gw0 exists; "" when not known


def gateway_ip(pod_cidr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """gw0's address on a podCIDR: its first IP (also the pods' gateway)."""
    return ipaddress.ip_network(pod_cidr).network_address + 1


def pod_mtu(uplink_mtu: int, mode: str, tunnel: str) -> int:
    """The pod MTU: the uplink's minus the tunnel overhead where pods may be tunnelled."""
    if mode in ("overlay", "hybrid"):
        return uplink_mtu - TUNNEL_OVERHEAD[tunnel]
    return uplink_mtu


@dataclass(frozen=True)
class PodIdentity:
    """Pod namespace/name/uid from CNI_ARGS (empty when the runtime is not Kubernetes)."""

    namespace: str = ""
    name: str = ""
    uid: str = ""
    infra_container_id: str = ""

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> PodIdentity:
        """Read the K8S_POD_* keys of CNI_ARGS."""
        return cls(
            namespace=args.get("K8S_POD_NAMESPACE", ""),
            name=args.get("K8S_POD_NAME", ""),
            uid=args.get("K8S_POD_UID", ""),
            infra_container_id=args.get("K8S_POD_INFRA_CONTAINER_ID", ""),
        )


def host_ifname(container_id: str, ifname: str, pod_name: str) -> str:
    """Stable host-side veth name (<= 15 chars): pod name prefix + hash of the attachment.

    # why: the hash covers (container id, ifname) so a re-created sandbox of the same
    # pod never collides with its predecessor; the prefix lets people find the pod.
    """
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()[:8]
    prefix = re.sub(r"[^a-z0-9]", "", pod_name.lower())[:6] or "sl"
    return f"{prefix}-{digest}"


def link_alias(container_id: str, ifname: str) -> str:
    """The alias set on a host veth, so GC recognises Sluice's links."""
    return f"{ALIAS_PREFIX}{container_id}/{ifname}"


def parse_alias(alias: str) -> tuple[str, str] | None:
    """(container id, ifname) from a Sluice link alias, or None."""
    if not alias.startswith(ALIAS_PREFIX):
        return None
    container_id, sep, ifname = alias[len(ALIAS_PREFIX) :].partition("/")
    return (container_id, ifname) if sep else None
