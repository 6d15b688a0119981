"""The controller's in-memory model of its node: a cache rebuilt from OVSDB and Kubernetes.

Writers (the OVSDB watcher, the Kubernetes watcher) call the `set_*`/`remove_*`
methods from their own threads; each change marks object keys dirty and wakes
the reconciler, which reads a consistent `snapshot()`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flows.desired import GATEWAY_KEY, PIPELINE_KEY
from flows.model import NodeConfig, PodPort, RemoteNode
from flows.policy_model import NamespaceMeta, PodMeta, Policy

# Marks "recompute every NetworkPolicy key" (any policy input or local pod changed).
POLICY_DIRTY = "policy/*"


@dataclass(frozen=True)
class Snapshot:
    """A consistent copy of the model."""

    node: NodeConfig | None
    pods: dict[str, PodPort] = field(default_factory=dict)
    remotes: dict[str, RemoteNode] = field(default_factory=dict)
    version: int = 0
    # NetworkPolicy inputs from the API server, keyed "namespace/name" (namespaces: name)
    policies: dict[str, Policy] = field(default_factory=dict)
    k8s_pods: dict[str, PodMeta] = field(default_factory=dict)
    namespaces: dict[str, NamespaceMeta] = field(default_factory=dict)


class NodeState:
    """Thread-safe model of this node; `wait_dirty` lets one consumer follow changes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._node: NodeConfig | None = None
        self._pods: dict[str, PodPort] = {}
        self._remotes: dict[str, RemoteNode] = {}
        self._policy_inputs: dict[str, dict[str, Any]] = {
            "policies": {},
            "k8s_pods": {},
            "namespaces": {},
        }
        self._dirty: set[str] = set()
        self._all_dirty = False
        self._version = 0

    def _changed(self, keys: Iterable[str] = (), everything: bool = False) -> None:
        self._version += 1
        self._dirty.update(keys)
        self._all_dirty = self._all_dirty or everything
        self._cond.notify_all()

    def set_node(self, node: NodeConfig) -> None:
        """Set this node's configuration; every flow depends on it."""
        with self._cond:
            if node != self._node:
                self._node = node
                self._changed(everything=True)

    def node(self) -> NodeConfig | None:
        """This node's configuration (None until its podCIDR is known)."""
        with self._cond:
            return self._node

    def set_pod(self, pod: PodPort) -> None:
        """Add or update a local pod port."""
        with self._cond:
            if self._pods.get(pod.key) != pod:
                self._pods[pod.key] = pod
                self._changed([pod.key, POLICY_DIRTY])

    def remove_pod(self, key: str) -> None:
        """Forget a local pod port."""
        with self._cond:
            if self._pods.pop(key, None) is not None:
                self._changed([key, POLICY_DIRTY])

    def replace_pods(self, pods: Iterable[PodPort]) -> None:
        """Replace every local pod (a full resync from OVSDB)."""
        new = {p.key: p for p in pods}
        with self._cond:
            changed = {k for k in new.keys() | self._pods.keys() if new.get(k) != self._pods.get(k)}
            self._pods = new
            if changed:
                self._changed(changed | {POLICY_DIRTY})

    def set_remote(self, remote: RemoteNode) -> None:
        """Add or update a remote node."""
        with self._cond:
            if self._remotes.get(remote.key) != remote:
                self._remotes[remote.key] = remote
                self._changed([remote.key])

    def remove_remote(self, key: str) -> None:
        """Forget a remote node."""
        with self._cond:
            if self._remotes.pop(key, None) is not None:
                self._changed([key])

    def set_policy_input(self, kind: str, key: str, value: Any) -> None:
        """Set (or with None remove) one NetworkPolicy input: kind is "policies",
        "k8s_pods" or "namespaces"."""
        with self._cond:
            store = self._policy_inputs[kind]
            if value is None:
                if store.pop(key, None) is not None:
                    self._changed([POLICY_DIRTY])
            elif store.get(key) != value:
                store[key] = value
                self._changed([POLICY_DIRTY])

    def snapshot(self) -> Snapshot:
        """A consistent copy of the whole model."""
        with self._cond:
            inputs = {kind: dict(store) for kind, store in self._policy_inputs.items()}
            return Snapshot(
                self._node, dict(self._pods), dict(self._remotes), self._version, **inputs
            )

    def wait_dirty(self, timeout: float) -> tuple[set[str], bool] | None:
        """Block until something changed; return (dirty keys, everything?) and clear them."""
        with self._cond:
            if not self._dirty and not self._all_dirty:
                self._cond.wait(timeout)
            if not self._dirty and not self._all_dirty:
                return None
            keys, everything = self._dirty, self._all_dirty
            self._dirty, self._all_dirty = set(), False
            return keys, everything

    def mark_all_dirty(self) -> None:
        """Ask the consumer to recompute everything (e.g. after a reconnect)."""
        with self._cond:
            self._changed(everything=True)


STATIC_KEYS = (PIPELINE_KEY, GATEWAY_KEY)
