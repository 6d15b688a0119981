"""The uplink bridge for tunnels on the userspace datapath.

# why: with `datapath_type=netdev`, OVS sends encapsulated packets itself and can
# only emit them through an OVS bridge: the route to the remote node IP must leave
# through an OVS internal port. So the uplink NIC becomes a port of `br-phy` and the
# node IP (with its routes and MAC) moves onto br-phy's internal interface. The
# kernel datapath needs none of this and the function is then not called.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from dataclasses import dataclass

from pyroute2 import IPRoute

from cni import netns
from controller.config import Config
from ovsdb import ports, schema
from ovsdb.connection import OvsdbClient

LOG = logging.getLogger(__name__)
UPLINK_BRIDGE = "br-phy"


def default_route_index(ipr: IPRoute) -> int | None:
    """Index of the IPv4 default route's device, if any."""
    for route in ipr.get_default_routes(family=socket.AF_INET):
        index = route.get_attr("RTA_OIF")
        if index is not None:
            return int(index)
    return None


def default_uplink(ipr: IPRoute) -> str | None:
    """Name of the default route's device, if any."""
    index = default_route_index(ipr)
    return netns.link_info(ipr, index)["name"] if index is not None else None


@dataclass(frozen=True)
class Uplink:
    """The node's uplink NIC after set-up: name, MAC and the node's IPv4 subnet."""

    name: str
    mac: str
    subnet: ipaddress.IPv4Network | None


def ensure_uplink_bridge(client: OvsdbClient, cfg: Config) -> Uplink | None:
    """Overlay on netdev: the uplink becomes a port of br-phy, which takes its addresses."""
    ports.ensure_bridge(
        client,
        UPLINK_BRIDGE,
        datapath_type="netdev",
        fail_mode="standalone",
        protocols=("OpenFlow13",),
        other_config=_hwaddr(cfg),
    )
    return attach_uplink(client, cfg, UPLINK_BRIDGE, None)


def ensure_routing_uplink(client: OvsdbClient, cfg: Config) -> Uplink | None:
    """Routing mode: the uplink becomes br-int's port 3; br-int's LOCAL port takes its
    addresses and MAC (the host keeps its identity on the segment)."""
    ports.ensure_bridge(
        client,
        cfg.bridge,
        datapath_type=ports.bridge_datapath_type(client, cfg.bridge),
        fail_mode="secure",
        protocols=("OpenFlow13",),
        other_config=_hwaddr(cfg),
    )
    return attach_uplink(client, cfg, cfg.bridge, schema.UPLINK_OFPORT)


def _hwaddr(cfg: Config) -> dict[str, str]:
    with IPRoute() as ipr:
        name = cfg.uplink_interface or default_uplink(ipr)
        index = netns.link_index(ipr, name) if name else None
        return {"hwaddr": netns.link_info(ipr, index)["mac"]} if index is not None else {}


def attach_uplink(
    client: OvsdbClient, cfg: Config, bridge: str, ofport_request: int | None
) -> Uplink | None:
    """Add the uplink NIC to `bridge` and move its IPv4 addresses and gatewayed routes
    onto the bridge's internal port. Idempotent; None when there is no uplink."""
    with IPRoute() as ipr:
        uplink = cfg.uplink_interface or default_uplink(ipr)
        if uplink is None or uplink == bridge:
            return None
        index = netns.link_index(ipr, uplink)
        if index is None:
            LOG.warning("uplink %s not found", uplink)
            return None
        info = netns.link_info(ipr, index)
        with client.transaction() as txn:
            txn.add(client.api.add_port(bridge, uplink, may_exist=True))
            if ofport_request is not None:
                txn.add(client.api.db_set("Interface", uplink, ("ofport_request", ofport_request)))
        bridge_index = _wait_index(ipr, bridge)
        ipr.link("set", index=bridge_index, mtu=info["mtu"], state="up")
        _move_addresses(ipr, index, bridge_index, bridge)
        netns.isolate_host_end(uplink)
        subnet = next(
            (a.network for a in netns.link_addresses(ipr, bridge_index) if a.version == 4), None
        )
    return Uplink(uplink, info["mac"], subnet)


def _wait_index(ipr: IPRoute, name: str) -> int:
    deadline = time.monotonic() + 10
    while (index := netns.link_index(ipr, name)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not appear")
        time.sleep(0.02)
    return index


def _move_addresses(ipr: IPRoute, src: int, dst: int, dst_name: str) -> None:
    """Move IPv4 addresses and gatewayed routes from link `src` to link `dst`."""
    routes = [
        (str(net), str(gw))
        for net, gw in netns.link_routes(ipr, src)
        if gw is not None and net.version == 4
    ]
    for addr in netns.link_addresses(ipr, src):
        if addr.version != 4:
            continue
        ipr.addr("del", index=src, address=str(addr.ip), prefixlen=addr.network.prefixlen)
        if addr not in netns.link_addresses(ipr, dst):
            ipr.addr("add", index=dst, address=str(addr.ip), prefixlen=addr.network.prefixlen)
        LOG.info("moved %s onto %s", addr, dst_name)
    for dst_net, gw in routes:
        ipr.route("replace", dst=dst_net, gateway=gw, oif=dst)
