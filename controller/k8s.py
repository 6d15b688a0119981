"""Kubernetes side of the controller: API client and the Node handler.

This node's Node object gives the podCIDR (never invented: Sluice waits for
`spec.podCIDR`) and the node IP; every other Node with a podCIDR becomes a
`RemoteNode` (one L3 flow each).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
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


def internal_ip(node: Any) -> str | None:
    """The node's InternalIP address from its status, if any."""
    for addr in (node.status.addresses or []) if node.status else []:
        if addr.type == "InternalIP":
            return str(addr.address)
    return None


def pod_cidrs(node: Any) -> tuple[str, ...]:
    """spec.podCIDRs (or the single spec.podCIDR), IPv4 only."""
    spec = node.spec
    cidrs = list(spec.pod_cidrs or ([spec.pod_cidr] if spec.pod_cidr else []))
    return tuple(c for c in cidrs if ":" not in c)


class NodeHandler:
    """Turns Node events into this node's podCIDR and the set of remote nodes."""

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

    def __call__(self, kind: str, node: Any) -> None:
        name = node.metadata.name
        if name == self.my_name:
            cidrs = pod_cidrs(node)
            if kind != "DELETED" and cidrs:
                self.on_self(cidrs, internal_ip(node))
            return
        remote = None if kind == "DELETED" else self._remote(node)
        if self.on_peer is not None:
            self.on_peer(name, remote.node_ip if remote else None)
        if remote is None:
            self.state.remove_remote(f"node/{name}")
        else:
            self.state.set_remote(remote)

    def _remote(self, node: Any) -> RemoteNode | None:
        cidrs, ip = pod_cidrs(node), internal_ip(node)
        if not cidrs or not ip:
            return None
        annotations = node.metadata.annotations or {}
        try:
            return RemoteNode(
                name=node.metadata.name,
                node_ip=ip,
                pod_cidrs=cidrs,
                uplink_mac=annotations.get(UPLINK_MAC_ANNOTATION),
            )
        except ValueError as exc:
            LOG.warning("ignoring node %s: %s", node.metadata.name, exc)
            return None
