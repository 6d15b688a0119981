"""The CNI server inside sluice-controller: warm OVSDB and netlink, start-up cleanup."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pyroute2 import IPRoute

from cni import maintenance, netns
from cni.commands import effective_netconf
from cni.config import parse as parse_netconf
from cni.node import NodeNetwork
from cni.plugin import SluicePlugin
from cni.ports import OvsdbPortStore
from cni.server import CniServer
from ovsdb import schema

LOG = logging.getLogger(__name__)
# why: the CNI server shares the interpreter lock with the controller's busy
# threads, and they get busy exactly when an ADD is about to answer (the IDL
# thread parsing the new port's rows, the reconciler computing its flows). With
# the default 5 ms switch interval each of them could hold the request up for
# 5 ms at a time; measured: about 3 ms off a 25 ms ADD.
SWITCH_INTERVAL_S = 0.001


class CniService:
    """Owns the CNI server and the node facts it answers with."""

    def __init__(
        self,
        socket_path: str,
        node: NodeNetwork,
        store: OvsdbPortStore,
        cni_path: str,
        observer: Callable[[str, int, float], None] | None = None,
    ) -> None:
        self._node = node
        self._lock = threading.Lock()
        self.store = store
        self.cni_path = cni_path
        self.plugin = SluicePlugin(self.node, store)
        self.server = CniServer(socket_path, self.plugin, observer)
        self._broken: set[str] = set()  # pod ports ovs-vswitchd could not open (logged)

    def node(self) -> NodeNetwork:
        """The node facts as of now."""
        with self._lock:
            return self._node

    def set_pod_cidrs(self, cidrs: tuple[str, ...], gateway_mac: str = "") -> None:
        """Use the node's podCIDR(s) learnt from the Node object (and gw0's MAC)."""
        with self._lock:
            known = bool(self._node.pod_cidrs)
            self._node = replace(self._node, pod_cidrs=cidrs, gateway_mac=gateway_mac)
        if not known:
            for error in self.sweep_dead_attachments():
                LOG.warning("GC after podCIDR: %s", error)

    def start(self) -> None:
        """Replay DELs recorded while down, remove dead attachments, then serve.

        Also shortens the interpreter's thread switch interval (process-wide).
        """
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self.store.client.watch("Interface", self._on_interface)
        failed = self.server.replay_pending_deletes(self.node().state_dir)
        for failure in failed:
            LOG.warning("pending DEL still fails: %s", failure)
        errors = self.sweep_dead_attachments()
        for error in errors:
            LOG.warning("start-up GC: %s", error)
        self.server.start()

    def stop(self) -> None:
        """Stop serving."""
        self.server.stop()
        self.store.client.unwatch("Interface", self._on_interface)

    def _on_interface(self, event: str, row: dict[str, Any]) -> None:
        """Log a pod port that ovs-vswitchd could not open (IDL thread; no blocking).

        # why: ADD returns once OVSDB holds the port, before vswitchd opens it; a
        # failure to open it shows only here (and in CHECK).
        """
        ids, name = row.get("external_ids") or {}, str(row.get("name", ""))
        if ids.get(schema.OWNER) != schema.OWNER_CNI:
            return
        error = row.get("error")
        if event == "delete" or not error:
            self._broken.discard(name)
        elif name not in self._broken:
            self._broken.add(name)
            LOG.warning(
                "ovs-vswitchd cannot open pod port %s (pod %s/%s, container %s): %s",
                name,
                ids.get(schema.POD_NAMESPACE, ""),
                ids.get(schema.POD_NAME, ""),
                ids.get(schema.CONTAINER_ID, ""),
                error,
            )

    def sweep_dead_attachments(self) -> list[str]:
        """GC at start-up: remove ports, veths and leases of pods whose veth is gone.

        # why: the host veth dies with the pod's netns, whatever mount namespace we
        # see it from, so "no host link" is a safe sign the attachment is dead.
        """
        node = self.node()
        if not node.pod_cidrs:
            return []
        with IPRoute() as host:
            keep = {
                (
                    p.external_ids.get(schema.CONTAINER_ID, ""),
                    p.external_ids.get(schema.IF_NAME, ""),
                )
                for p in self.store.pod_ports()
                if netns.link_index(host, p.name) is not None
            }
            conf = parse_netconf(json.dumps({"cniVersion": "1.0.0", "name": "sluice"}).encode())
            netconf = effective_netconf(conf, node)
            env = {"CNI_PATH": self.cni_path}
            return maintenance.collect_stale(
                keep, netconf, env, self.cni_path.split(":"), host, self.store
            )
