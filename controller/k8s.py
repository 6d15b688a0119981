"""Kubernetes side of the controller: API client and the Node handler.

This node's Node object gives the podCIDR (never invented: Sluice waits for
`spec.podCIDR`) and the node IP; every other Node with a podCIDR becomes a
`RemoteNode` (one L3 flow each).

The handler is ``raw``: its informer hands it the API server's JSON (dicts),
and keeps no client model of the 1000 Nodes of a big cluster (a kubelet's
Node carries images, conditions and capacity the controller never reads).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client, config

from controller.state import NodeState
from flows.model import RemoteNode

LOG = logging.getLogger(__name__)
UPLINK_MAC_ANNOTATION = "sluice.io/uplink-mac"


def api_client(kubeconfig: str | None) -> client.ApiClient | None:
    """An API client from `kubeconfig`, in-cluster credentials, or None (standalone)."""
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    return None


def internal_ip(node: Mapping[str, Any]) -> str | None:
    """The InternalIP address in a Node's (JSON) status, if any."""
    for addr in (node.get("status") or {}).get("addresses") or []:
        if addr.get("type") == "InternalIP" and addr.get("address"):
            return str(addr["address"])
    return None


def pod_cidrs(node: Mapping[str, Any]) -> tuple[str, ...]:
    """A Node's (JSON) spec.podCIDRs (or the single spec.podCIDR), IPv4 only."""
    spec = node.get("spec") or {}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    return tuple(str(c) for c in cidrs if ":" not in c)


class NodeHandler:
    """Turns Node events (JSON dicts) into this node's podCIDR and the set of remote nodes."""

    raw = True  # the informer passes plain dicts (see controller/informer.py)

    def __init__(
        self,
        my_name: str,
        state: NodeState,
        on_self: Callable[[tuple[str, ...], str | None], None],
        on_peer: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.my_name = my_name
        self.state = state
        self.on_self = on_self
        self.on_peer = on_peer

    def __call__(self, kind: str, node: Mapping[str, Any]) -> None:
        name = (node.get("metadata") or {}).get("name")
        if not name:
            return
        if name == self.my_name:
            cidrs = pod_cidrs(node)
            if kind != "DELETED" and cidrs:
                self.on_self(cidrs, internal_ip(node))
            return
        remote = None if kind == "DELETED" else self._remote(name, node)
        if self.on_peer is not None:
            self.on_peer(name, remote.node_ip if remote else None)
        if remote is None:
            self.state.remove_remote(f"node/{name}")
        else:
            self.state.set_remote(remote)

    def _remote(self, name: str, node: Mapping[str, Any]) -> RemoteNode | None:
        cidrs, ip = pod_cidrs(node), internal_ip(node)
        if not cidrs or not ip:
            return None
        annotations = node["metadata"].get("annotations") or {}
        try:
            return RemoteNode(
                name=name,
                node_ip=ip,
                pod_cidrs=cidrs,
                uplink_mac=annotations.get(UPLINK_MAC_ANNOTATION),
            )
        except ValueError as exc:
            LOG.warning("ignoring node %s: %s", name, exc)
            return None
