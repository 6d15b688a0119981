"""CHECK: verify a pod's veth, addresses, routes and OVS port against prevResult."""

from __future__ import annotations

from typing import NoReturn

from pyroute2 import IPRoute

from cni import ipam, netns
from cni.commands import effective_netconf, open_pod_netns
from cni.config import NetConf
from cni.node import NodeNetwork, PodIdentity, host_ifname
from cni.ports import PortStore
from cni.skel import CmdArgs
from cni.types import ERR_CHECK_FAILED, ERR_INVALID_CONFIG, CniError, Interface, Result


def check(args: CmdArgs, conf: NetConf, node: NodeNetwork, host: IPRoute, ovs: PortStore) -> None:
    """Raise CniError(104) naming the first thing that differs from prevResult."""
    prev = conf.prev_result
    if prev is None:
        raise CniError(ERR_INVALID_CONFIG, "CHECK needs prevResult in the configuration")
    index, expected = _container_iface(prev, args.ifname, args.netns)
    with open_pod_netns(args.netns) as pod:
        link = pod.link_index(args.ifname)
        if link is None:
            _fail(f"interface {args.ifname} is missing in {args.netns}")
        info = netns.link_info(pod.ipr, link)
        if expected.mac and str(info["mac"]).lower() != expected.mac.lower():
            _fail(f"interface {args.ifname} has MAC {info['mac']}, prevResult says {expected.mac}")
        if not info["up"]:
            _fail(f"interface {args.ifname} is down")
        _check_addresses(pod, link, prev, index, args.ifname)
        _check_routes(pod, link, prev, args.ifname)
        if node.tx_checksum_off and pod.tx_checksum(args.ifname):
            _fail(f"TX checksum offload is on for {args.ifname}; the netdev datapath needs it off")
    _check_port(args, node, host, ovs)
    ipam.run_ipam("CHECK", effective_netconf(conf, node), args.env, args.path)


def _container_iface(prev: Result, ifname: str, sandbox: str) -> tuple[int, Interface]:
    for index, iface in enumerate(prev.interfaces):
        if iface.name == ifname and iface.sandbox:
            return index, iface
    raise CniError(ERR_CHECK_FAILED, f"prevResult has no sandbox interface {ifname} ({sandbox})")


def _check_addresses(pod: netns.PodNetns, link: int, prev: Result, index: int, ifname: str) -> None:
    present = netns.link_addresses(pod.ipr, link)
    for ip in prev.ips:
        if ip.interface == index and ip.address not in present:
            _fail(f"address {ip.address} is missing on {ifname}")


def _check_routes(pod: netns.PodNetns, link: int, prev: Result, ifname: str) -> None:
    present = netns.link_routes(pod.ipr, link)
    for route in prev.routes:
        if (route.dst, route.gw) not in present and (route.dst, None) not in present:
            _fail(f"route to {route.dst} via {route.gw} is missing on {ifname}")


def _check_port(args: CmdArgs, node: NodeNetwork, host: IPRoute, ovs: PortStore) -> None:
    port = ovs.find_pod_port(args.container_id, args.ifname)
    if port is not None and not port.ofport:
        # why: ADD returns before ovs-vswitchd attached the port; judge it once
        # vswitchd caught up with everything committed so far.
        ovs.wait_vswitchd(node.ovsdb_timeout)
        port = ovs.find_pod_port(args.container_id, args.ifname)
    if port is None:
        _fail(f"no OVS port for container {args.container_id} interface {args.ifname}")
    if not port.ofport or port.ofport < 0:
        reason = f": {port.error}" if port.error else ""
        _fail(f"OVS port {port.name} has no ofport ({port.ofport}){reason}")
    expected = host_ifname(args.container_id, args.ifname, PodIdentity.from_args(args.args).name)
    if port.name != expected:
        _fail(f"OVS port is {port.name}, expected {expected}")
    index = netns.link_index(host, port.name)
    if index is None:
        _fail(f"host veth {port.name} is missing")
    elif not netns.link_info(host, index)["up"]:
        _fail(f"host veth {port.name} is down")


def _fail(msg: str) -> NoReturn:
    raise CniError(ERR_CHECK_FAILED, msg)
