"""The uplink bridge for tunnels on the userspace datapath.

# why: with `datapath_type=netdev`, OVS sends encapsulated packets itself and can
# only emit them through an OVS bridge: the route to the remote node IP must leave
# through an OVS internal port. So the uplink NIC becomes a port of `br-phy` and the
# node IP (with its routes and MAC) moves onto br-phy's internal interface. The
# kernel datapath needs none of this and the function is then not called.
"""

from __future__ import annotations

import logging
import socket
import time

from pyroute2 import IPRoute

from cni import netns
from controller.config import Config
from ovsdb import ports
from ovsdb.connection import OvsdbClient

LOG = logging.getLogger(__name__)
UPLINK_BRIDGE = "br-phy"


def default_uplink(ipr: IPRoute) -> str | None:
    """Name of the default route's device, if any."""
    for route in ipr.get_default_routes(family=socket.AF_INET):
        index = route.get_attr("RTA_OIF")
        if index is not None:
            return netns.link_info(ipr, index)["name"]
    return None


def ensure_uplink_bridge(client: OvsdbClient, cfg: Config) -> str | None:
    """Put the uplink on br-phy and move its IPv4 addresses and routes there.

    Returns the bridge name, or None when no uplink can be found. Idempotent: a
    second call finds the addresses already on br-phy and changes nothing.
    """
    with IPRoute() as ipr:
        uplink = cfg.uplink_interface or default_uplink(ipr)
        if uplink is None or uplink == UPLINK_BRIDGE:
            return UPLINK_BRIDGE if uplink == UPLINK_BRIDGE else None
        index = netns.link_index(ipr, uplink)
        if index is None:
            LOG.warning("uplink %s not found; tunnels need it", uplink)
            return None
        info = netns.link_info(ipr, index)
        ports.ensure_bridge(
            client,
            UPLINK_BRIDGE,
            datapath_type="netdev",
            fail_mode="standalone",
            protocols=("OpenFlow13",),
            other_config={"hwaddr": info["mac"]},
        )
        with client.transaction() as txn:
            txn.add(client.api.add_port(UPLINK_BRIDGE, uplink, may_exist=True))
        bridge = _wait_index(ipr, UPLINK_BRIDGE)
        ipr.link("set", index=bridge, mtu=info["mtu"], state="up")
        _move_addresses(ipr, index, bridge)
        netns.isolate_host_end(uplink)
    return UPLINK_BRIDGE


def _wait_index(ipr: IPRoute, name: str) -> int:
    deadline = time.monotonic() + 10
    while (index := netns.link_index(ipr, name)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not appear")
        time.sleep(0.02)
    return index


def _move_addresses(ipr: IPRoute, src: int, dst: int) -> None:
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
        LOG.info("moved %s onto %s", addr, UPLINK_BRIDGE)
    for dst_net, gw in routes:
        ipr.route("replace", dst=dst_net, gateway=gw, oif=dst)
