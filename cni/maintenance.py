"""STATUS and GC: is the plugin ready, and remove attachments nobody owns any more."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from cni import ipam, netns
from cni.commands import effective_netconf
from cni.config import NetConf
from cni.node import NodeNetwork, parse_alias
from cni.ports import PortStore
from cni.skel import CmdArgs
from cni.types import (
    ERR_INTERNAL,
    ERR_INVALID_CONFIG,
    ERR_NOT_AVAILABLE,
    ERR_NOT_AVAILABLE_LIMITED,
    CniError,
)
from ovsdb import schema

LOG = logging.getLogger(__name__)
Attachment = tuple[str, str]  # (container id, ifname)


def status(conf: NetConf, node: NodeNetwork, ovs: PortStore) -> None:
    """Raise 51 when OVSDB or the bridge is unusable, 50 when no ADD can succeed."""
    if not ovs.connected():
        raise CniError(ERR_NOT_AVAILABLE_LIMITED, "OVSDB is not reachable")
    try:
        present = ovs.bridge_exists(node.bridge)
    except Exception as exc:  # noqa: BLE001 — any OVSDB failure means "not available"
        raise CniError(ERR_NOT_AVAILABLE_LIMITED, "OVSDB is not reachable", str(exc)) from exc
    if not present:
        raise CniError(ERR_NOT_AVAILABLE_LIMITED, f"bridge {node.bridge} does not exist")
    if not conf.ipam and not node.pod_cidrs:
        raise CniError(ERR_NOT_AVAILABLE, "the node's podCIDR is not known yet")
    netconf = effective_netconf(conf, node)
    if netconf["ipam"].get("type") == "host-local" and _host_local_exhausted(netconf):
        raise CniError(ERR_NOT_AVAILABLE, "IPAM pool exhausted", str(netconf["ipam"]["ranges"]))


def _host_local_exhausted(netconf: Mapping[str, Any]) -> bool:
    """True when every range of a host-local config has no free address left."""
    leased = set(host_local_leases(netconf))
    for range_set in netconf["ipam"].get("ranges") or []:
        for rng in range_set:
            net = ipaddress.ip_network(rng["subnet"])
            # network address, gateway and (IPv4) broadcast are never handed out
            usable = net.num_addresses - (3 if net.version == 4 else 2)
            used = sum(1 for ip in leased if ip in net)
            if used < usable:
                return False
    return True


def host_local_leases(netconf: Mapping[str, Any]) -> dict[Any, Attachment]:
    """host-local's leases: IP → (container id, ifname), read from its data dir.

    # why: host-local (1.1.x) has no GC command; its on-disk format is one file per
    # IP holding "<container id>\\r\\n<ifname>". Leases are released through its DEL.
    """
    base = Path(netconf["ipam"].get("dataDir") or "/var/lib/cni/networks") / netconf["name"]
    out: dict[Any, Attachment] = {}
    if not base.is_dir():
        return out
    for entry in base.iterdir():
        try:
            ip = ipaddress.ip_address(entry.name)
        except ValueError:
            continue
        lines = entry.read_text(errors="replace").splitlines()
        if lines:
            out[ip] = (lines[0].strip(), lines[1].strip() if len(lines) > 1 else "")
    return out


def valid_attachments(conf: NetConf) -> set[Attachment]:
    """The attachments the runtime says are in use (`cni.dev/valid-attachments`)."""
    raw = conf.raw.get("cni.dev/valid-attachments", conf.raw.get("cni.dev/attachments"))
    if not isinstance(raw, list):
        raise CniError(ERR_INVALID_CONFIG, "GC needs a cni.dev/valid-attachments list")
    out: set[Attachment] = set()
    for item in raw:
        if not isinstance(item, dict) or "containerID" not in item:
            raise CniError(ERR_INVALID_CONFIG, "cni.dev/valid-attachments entries need containerID")
        out.add((str(item["containerID"]), str(item.get("ifname", ""))))
    return out


def gc(args: CmdArgs, conf: NetConf, node: NodeNetwork, host: IPRoute, ovs: PortStore) -> None:
    """Remove ports, veths and leases of attachments not listed as valid."""
    keep = valid_attachments(conf)
    netconf = effective_netconf(conf, node)
    errors = collect_stale(keep, netconf, args.env, args.path, host, ovs)
    if errors:
        raise CniError(ERR_INTERNAL, "GC could not remove everything", "; ".join(errors))


def collect_stale(
    keep: set[Attachment],
    netconf: Mapping[str, Any],
    env: Mapping[str, str],
    path: Sequence[str],
    host: IPRoute,
    ovs: PortStore,
) -> list[str]:
    """Remove whatever Sluice made that is not in `keep`; return the failures."""
    errors: list[str] = []
    stale: set[Attachment] = set()
    for port in ovs.pod_ports():
        owner = (
            port.external_ids.get(schema.CONTAINER_ID, ""),
            port.external_ids.get(schema.IF_NAME, ""),
        )
        if owner not in keep:
            stale.add(owner)
            _attempt(errors, f"delete port {port.name}", lambda p=port.name: ovs.del_port(p))
            _attempt(
                errors,
                f"delete veth {port.name}",
                lambda p=port.name: netns.del_link_if_exists(host, p),
            )
    for name, alias in netns.links_with_alias_prefix(host, "sluice/").items():
        link_owner = parse_alias(alias)
        if link_owner is not None and link_owner not in keep:
            _attempt(
                errors, f"delete veth {name}", lambda n=name: netns.del_link_if_exists(host, n)
            )
    if netconf["ipam"].get("type") == "host-local":
        stale |= {a for a in host_local_leases(netconf).values() if a not in keep}
    for container_id, ifname in sorted(stale):
        if container_id:
            release = _release_env(env, container_id, ifname)
            _attempt(
                errors,
                f"release lease of {container_id}/{ifname}",
                lambda e=release: ipam.run_ipam("DEL", netconf, e, path),
            )
    return errors


def _release_env(env: Mapping[str, str], container_id: str, ifname: str) -> dict[str, str]:
    out = {k: v for k, v in env.items() if k not in ("CNI_NETNS", "CNI_ARGS")}
    out.update(CNI_CONTAINERID=container_id, CNI_IFNAME=ifname or "eth0")
    out.setdefault("PATH", os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
    return out


def _attempt(errors: list[str], what: str, fn: Any) -> None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 — GC keeps going past individual errors
        LOG.warning("GC: %s failed: %s", what, exc)
        errors.append(f"{what}: {exc}")
