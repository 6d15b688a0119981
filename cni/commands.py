"""ADD, DEL and CHECK: plug a pod into br-int and take it out again.

ADD undoes what it did, in reverse order, when any later step fails. DEL is best
effort: it succeeds when the netns, link, port or lease is already gone and
reports only what exists but could not be removed.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from cni import ipam, netns, nlbatch
from cni.config import NetConf
from cni.nlbatch import IPAddr
from cni.node import NodeNetwork, PodIdentity, gateway_ip, host_ifname, link_alias
from cni.ports import PortStore
from cni.skel import CmdArgs
from cni.types import (
    ERR_IFNAME_EXISTS,
    ERR_INTERNAL,
    ERR_NETLINK,
    ERR_OVS,
    ERR_TRY_AGAIN_LATER,
    ERR_UNKNOWN_CONTAINER,
    CniError,
    Interface,
    IPConfig,
    Result,
    Route,
)
from ovsdb import schema
from ovsdb.errors import OvsdbError, OvsdbUnavailable

LOG = logging.getLogger(__name__)


class UndoStack:
    """Undo actions run in reverse order; an undo that fails is logged, not raised."""

    def __init__(self) -> None:
        self._undos: list[tuple[str, Callable[[], object]]] = []

    def push(self, what: str, undo: Callable[[], object]) -> None:
        """Register `undo` for the step just done."""
        self._undos.append((what, undo))

    def unwind(self) -> None:
        """Run every undo, last first."""
        while self._undos:
            what, undo = self._undos.pop()
            try:
                undo()
            except Exception:  # noqa: BLE001 — keep undoing the rest
                LOG.exception("rollback step failed: %s", what)


@contextmanager
def rollback_on_error() -> Iterator[UndoStack]:
    """Yield an UndoStack that unwinds if the body raises."""
    stack = UndoStack()
    try:
        yield stack
    except BaseException:
        stack.unwind()
        raise


def effective_netconf(conf: NetConf, node: NodeNetwork) -> dict[str, Any]:
    """The config handed to the IPAM delegate: ours, with the default IPAM filled in."""
    raw = dict(conf.raw)
    if not conf.ipam:
        if not node.pod_cidrs:
            raise CniError(ERR_TRY_AGAIN_LATER, "the node's podCIDR is not known yet")
        raw["ipam"] = ipam.default_ipam(node.pod_cidrs, f"{node.state_dir}/ipam")
    return raw


def add(
    args: CmdArgs, conf: NetConf, node: NodeNetwork, host: socket.socket, ovs: PortStore
) -> Result:
    """Plug the container in; return the result (chained after any prevResult).

    The IPAM delegate runs while the veth is made and brought up (they do not
    depend on each other); addresses, routes and the OVS port follow once the
    lease is known. A failure undoes what was done, in reverse order.
    """
    netconf = effective_netconf(conf, node)
    pod_id = PodIdentity.from_args(args.args)
    mtu = conf.mtu or node.mtu
    name = host_ifname(args.container_id, args.ifname, pod_id.name)
    with open_pod_netns(args.netns) as pod, rollback_on_error() as undo:
        if pod.link_index(args.ifname) is not None:
            raise CniError(
                ERR_IFNAME_EXISTS, f"interface {args.ifname} already exists in {args.netns}"
            )
        lease = _DELEGATES.submit(ipam.run_ipam, "ADD", netconf, args.env, args.path)
        undo.push("ipam release", partial(_release_if_leased, lease, netconf, args))
        alias = link_alias(args.container_id, args.ifname)
        veth = _netlink(
            "create veth", lambda: netns.ensure_veth(host, pod, name, args.ifname, mtu, alias)
        )
        undo.push("delete veth", lambda: nlbatch.delete_link(host, name))
        # why: links come up before the lease is in, so that only the addresses and
        # routes (≈ 0.8 ms less of pyroute2 encoding) wait for the delegate.
        _netlink(
            "bring up pod interface", lambda: netns.bring_up_pod_interface(pod, veth.peer_index)
        )
        ipam_result = lease.result()
        assert ipam_result is not None
        routes = _routes(ipam_result)
        _netlink(
            "configure pod interface", lambda: _configure(pod, veth, ipam_result, routes, node)
        )
        ext_ids = _external_ids(args, pod_id, veth, ipam_result)
        _ovs("add port", lambda: ovs.add_pod_port(node.bridge, name, ext_ids, node.ovsdb_timeout))
        undo.push("delete port", lambda: ovs.del_port(name, if_exists=True))
        return _result(conf, veth, args.netns, ipam_result, routes, mtu)


# why: the IPAM delegate is a child process; running it on a pool thread lets the
# request thread make the veth meanwhile. Requests (not pool threads) wait on it,
# so a saturated pool only queues delegates.
_DELEGATES = ThreadPoolExecutor(max_workers=16, thread_name_prefix="cni-ipam")


def _release_if_leased(
    lease: Future[Result | None], netconf: dict[str, Any], args: CmdArgs
) -> None:
    """Undo of the IPAM ADD: wait for it, and release what it handed out."""
    if lease.exception() is None:
        ipam.run_ipam("DEL", netconf, args.env, args.path)


def _configure(
    pod: netns.PodNetns,
    veth: netns.VethPair,
    result: Result,
    routes: list[Route],
    node: NodeNetwork,
) -> None:
    netns.configure_pod_interface(
        pod,
        veth.peer_index,
        [ip.address for ip in result.ips],
        [(r.dst, r.gw) for r in routes],
        _gateway_neighbours(routes, node),
    )
    if node.tx_checksum_off:
        pod.set_tx_checksum(veth.peer_name, False)


def _gateway_neighbours(routes: list[Route], node: NodeNetwork) -> list[tuple[IPAddr, str]]:
    """(gw0's IP, gw0's MAC) when a route goes through gw0's IP (the first IP of a
    podCIDR).

    # why: the pod's first reply otherwise waits for an ARP exchange with the ARP
    # responder, one more pass through ovs-vswitchd's main loop, which on a busy
    # netdev node is the slow part of a new pod becoming reachable. The pipeline
    # routes on IP and never matches eth_dst, so the entry cannot misdirect
    # traffic even if gw0 is re-created with another MAC.
    """
    if not node.gateway_mac:
        return []
    gw_ips = {gateway_ip(c) for c in node.pod_cidrs}
    used = {r.gw for r in routes if r.gw is not None and r.gw in gw_ips}
    return [(gw, node.gateway_mac) for gw in sorted(used, key=str)]


def _routes(result: Result) -> list[Route]:
    """IPAM's routes, each without a gateway taking its family's gateway; a default
    route via the gateway for a family that IPAM gave no route for."""
    gateways = {ip.address.version: ip.gateway for ip in result.ips if ip.gateway}
    routes = [Route(r.dst, r.gw or gateways.get(r.dst.version)) for r in result.routes]
    covered = {r.dst.version for r in routes}
    for version, gw in sorted(gateways.items()):
        if version not in covered:
            routes.append(Route(ipaddress.ip_network("0.0.0.0/0" if version == 4 else "::/0"), gw))
    return routes


def _external_ids(
    args: CmdArgs, pod_id: PodIdentity, veth: netns.VethPair, result: Result
) -> dict[str, str]:
    return {
        schema.OWNER: schema.OWNER_CNI,
        schema.CONTAINER_ID: args.container_id,
        schema.IF_NAME: args.ifname,
        schema.POD_NAMESPACE: pod_id.namespace,
        schema.POD_NAME: pod_id.name,
        schema.POD_UID: pod_id.uid,
        schema.IPS: ",".join(str(ip.address) for ip in result.ips),
        schema.MAC: veth.peer_mac,
        schema.NETNS: args.netns,
    }


def _result(
    conf: NetConf,
    veth: netns.VethPair,
    sandbox: str,
    ipam_result: Result,
    routes: list[Route],
    mtu: int,
) -> Result:
    prev = conf.prev_result or Result()
    base = len(prev.interfaces)
    ifaces = [
        Interface(veth.host_name, veth.host_mac, mtu=mtu),
        Interface(veth.peer_name, veth.peer_mac, sandbox=sandbox, mtu=mtu),
    ]
    ips = [IPConfig(ip.address, ip.gateway, base + 1) for ip in ipam_result.ips]
    return Result(
        interfaces=prev.interfaces + ifaces,
        ips=prev.ips + ips,
        routes=prev.routes + routes,
        dns=conf.dns or prev.dns or ipam_result.dns,
    )


@contextmanager
def open_pod_netns(path: str) -> Iterator[netns.PodNetns]:
    try:
        pod = netns.PodNetns(path)
    except netns.NetnsMissing as exc:
        raise CniError(ERR_UNKNOWN_CONTAINER, "network namespace does not exist", str(exc)) from exc
    with pod:
        yield pod


def _netlink(what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except (NetlinkError, OSError) as exc:
        raise CniError(ERR_NETLINK, f"netlink: {what} failed", str(exc)) from exc


def _ovs(what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except OvsdbUnavailable as exc:
        raise CniError(ERR_TRY_AGAIN_LATER, f"ovsdb: {what}: OVSDB unreachable", str(exc)) from exc
    except OvsdbError as exc:
        raise CniError(ERR_OVS, f"ovsdb: {what} failed", str(exc)) from exc


def delete(
    args: CmdArgs, conf: NetConf, node: NodeNetwork, host: socket.socket, ovs: PortStore
) -> None:
    """Remove port, veth and lease; succeed for whatever is already gone.

    # why: the lease goes last, so its address cannot be handed to a new pod while
    # the controller still has flows for this one.
    """
    errors: list[str] = []
    port = _try(errors, "find port", lambda: ovs.find_pod_port(args.container_id, args.ifname))
    pod_id = PodIdentity.from_args(args.args)
    names = {host_ifname(args.container_id, args.ifname, pod_id.name)}
    if port is not None:
        names.add(port.name)
    for name in sorted(names):
        _try(errors, f"delete port {name}", partial(ovs.del_port, name, if_exists=True))
        _try(errors, f"delete veth {name}", partial(nlbatch.delete_link, host, name))
    if conf.ipam or node.pod_cidrs:
        netconf = effective_netconf(conf, node)
        _try(errors, "ipam release", lambda: ipam.run_ipam("DEL", netconf, args.env, args.path))
    else:
        # why: without a podCIDR the default IPAM cannot be configured; a lease left
        # from an earlier life is released by the sweep once the podCIDR is known.
        LOG.info(
            "DEL %s/%s: podCIDR unknown, lease release deferred", args.container_id, args.ifname
        )
    if errors:
        raise CniError(ERR_INTERNAL, "DEL could not remove everything", "; ".join(errors))


def _try(errors: list[str], what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 — DEL keeps going and reports at the end
        LOG.warning("DEL: %s failed: %s", what, exc)
        errors.append(f"{what}: {exc}")
        return None
