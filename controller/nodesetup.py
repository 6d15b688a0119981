"""Node plumbing the controller owns: br-int, the gateway port gw0, host routes.

Everything here is idempotent (`ensure_*`): the controller runs it at every start.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from cni import netns
from cni.node import NodeNetwork, gateway_ip, pod_mtu
from controller import tso
from controller.config import Config
from controller.uplink import default_route_index
from ovsdb import ports, schema
from ovsdb.connection import OvsdbClient

LOG = logging.getLogger(__name__)
_LINK_WAIT = 10.0


@dataclass(frozen=True)
class Gateway:
    """The node's gateway port: name, ofport, MAC and address (podCIDR's first IP)."""

    name: str
    ofport: int
    mac: str
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface


def detect_datapath_type(client: OvsdbClient, wanted: str) -> str:
    """`system` when the kernel module is loaded, else `netdev` (unless `wanted` says)."""
    kernel = (
        wanted == "auto" and tso.KERNEL_MODULE.exists() and "system" in ports.datapath_types(client)
    )
    return tso.resolve_datapath(wanted, kernel)


def ensure_bridge(client: OvsdbClient, cfg: Config) -> str:
    """Create br-int (secure fail mode, OpenFlow 1.3, our controller); return its datapath type."""
    dp_type = detect_datapath_type(client, cfg.datapath_type)
    controller = f"tcp:{cfg.openflow.listen_host}:{cfg.openflow.port}"
    ports.ensure_bridge(
        client,
        cfg.bridge,
        datapath_type=dp_type,
        fail_mode="secure",
        protocols=("OpenFlow13",),
        controller=controller,
    )
    return dp_type


def ensure_gateway(client: OvsdbClient, cfg: Config, pod_cidr: str) -> Gateway:
    """gw0 as an internal port (ofport 2) holding the podCIDR's first IP, up, with a
    route for the cluster CIDR through it."""
    net = ipaddress.ip_network(pod_cidr)
    address = ipaddress.ip_interface(f"{gateway_ip(pod_cidr)}/{net.prefixlen}")
    ofport = ports.ensure_internal_port(
        client, cfg.bridge, schema.GATEWAY_PORT, ofport_request=schema.GATEWAY_OFPORT
    )
    with IPRoute() as ipr:
        index = _wait_link(ipr, schema.GATEWAY_PORT)
        mtu = node_mtu(cfg, ipr)
        ipr.link("set", index=index, mtu=mtu, state="up")
        if address not in netns.link_addresses(ipr, index):
            ipr.addr("add", index=index, address=str(address.ip), prefixlen=net.prefixlen)
        _ensure_route(ipr, cfg.cluster_cidr, index)
        mac = str(netns.link_info(ipr, index)["mac"])
    return Gateway(schema.GATEWAY_PORT, ofport, mac, address)


def _wait_link(ipr: IPRoute, name: str) -> int:
    deadline = time.monotonic() + _LINK_WAIT
    while True:
        index = netns.link_index(ipr, name)
        if index is not None:
            return index
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not appear within {_LINK_WAIT} s")
        time.sleep(0.02)


def _ensure_route(ipr: IPRoute, cidr: str, index: int) -> None:
    """Route `cidr` through link `index` (the more specific podCIDR route stays)."""
    try:
        ipr.route("replace", dst=cidr, oif=index)
    except NetlinkError as exc:
        LOG.warning("route %s via gw0 not set: %s", cidr, exc)


def uplink_mtu(cfg: Config, ipr: IPRoute) -> int:
    """MTU of the configured uplink, else of the default route's device, else 1500."""
    index = None
    if cfg.uplink_interface:
        index = netns.link_index(ipr, cfg.uplink_interface)
    else:
        index = default_route_index(ipr)
    if index is None:
        return 1500
    return netns.link_info(ipr, index)["mtu"] or 1500


def node_mtu(cfg: Config, ipr: IPRoute) -> int:
    """The pod (and gw0) MTU: configured, or the uplink's minus tunnel overhead."""
    return cfg.mtu or pod_mtu(uplink_mtu(cfg, ipr), cfg.mode, cfg.tunnel_type)


def node_network(
    client: OvsdbClient, cfg: Config, pod_cidrs: tuple[str, ...], gateway_mac: str = ""
) -> NodeNetwork:
    """What the CNI server needs: bridge, podCIDRs, gw0's MAC, MTU and the checksum
    workaround."""
    dp_type = ports.bridge_datapath_type(client, cfg.bridge) or "netdev"
    tso = ports.userspace_tso_enabled(client)
    with IPRoute() as ipr:
        mtu = node_mtu(cfg, ipr)
    return NodeNetwork(
        bridge=cfg.bridge,
        pod_cidrs=pod_cidrs,
        mtu=mtu,
        # why: with the userspace datapath and no userspace TSO, OVS forwards the
        # pod's partial checksums untouched and TCP peers drop the segments.
        tx_checksum_off=dp_type == "netdev" and not tso,
        state_dir=cfg.cni.state_dir,
        gateway_mac=gateway_mac,
    )


def ensure_tunnel_port(client: OvsdbClient, cfg: Config, node_ip: str) -> None:
    """The flow-based tunnel port tun0 (ofport 1): remote_ip and key set per flow."""
    options = {"remote_ip": "flow", "key": "flow", "local_ip": node_ip}
    with client.transaction() as txn:
        txn.add(client.api.add_port(cfg.bridge, schema.TUNNEL_PORT, may_exist=True))
        txn.add(
            client.api.db_set(
                "Interface",
                schema.TUNNEL_PORT,
                ("type", cfg.tunnel_type),
                ("options", options),
                ("ofport_request", schema.TUNNEL_OFPORT),
            )
        )


def detect_node_ip(cfg: Config) -> str | None:
    """The configured node IP, else the first IPv4 address of the uplink (or of the
    default route's device)."""
    if cfg.node_ip:
        return cfg.node_ip
    with IPRoute() as ipr:
        index = netns.link_index(ipr, cfg.uplink_interface) if cfg.uplink_interface else None
        if index is None:
            index = default_route_index(ipr)
        if index is None:
            return None
        for addr in netns.link_addresses(ipr, index):
            if addr.version == 4:
                return str(addr.ip)
    return None


def uplink_mac(cfg: Config) -> str | None:
    """MAC of the configured uplink interface (routing and underlay modes)."""
    if not cfg.uplink_interface:
        return None
    with IPRoute() as ipr:
        index = netns.link_index(ipr, cfg.uplink_interface)
        return netns.link_info(ipr, index)["mac"] if index is not None else None
