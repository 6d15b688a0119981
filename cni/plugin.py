"""Sluice's CNI plugin: the `cni.skel.Plugin` the CNI server dispatches to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyroute2 import IPRoute

from cni import check as check_mod
from cni import commands, maintenance, nlbatch
from cni.config import NetConf
from cni.node import NodeNetwork
from cni.ports import PortStore
from cni.skel import CmdArgs


class SluicePlugin:
    """ADD/DEL/CHECK/STATUS/GC against this node's OVS and netlink.

    `node` is called per request so a podCIDR learnt after start-up is used at once.
    """

    def __init__(self, node: Callable[[], NodeNetwork], ports: PortStore) -> None:
        self.node = node
        self.ports = ports

    def add(self, args: CmdArgs, conf: NetConf) -> dict[str, Any]:
        """Plug the container in and return the result JSON in the config's version."""
        with nlbatch.open_socket() as host:
            result = commands.add(args, conf, self.node(), host, self.ports)
        return result.to_json(conf.cni_version)

    def delete(self, args: CmdArgs, conf: NetConf) -> None:
        """Unplug the container; succeeds when everything is already gone."""
        with nlbatch.open_socket() as host:
            commands.delete(args, conf, self.node(), host, self.ports)

    def check(self, args: CmdArgs, conf: NetConf) -> None:
        """Verify the container's networking against prevResult."""
        with IPRoute() as host:
            check_mod.check(args, conf, self.node(), host, self.ports)

    def status(self, args: CmdArgs, conf: NetConf) -> None:
        """Raise 50/51 when the plugin cannot serve ADD."""
        maintenance.status(conf, self.node(), self.ports)

    def gc(self, args: CmdArgs, conf: NetConf) -> None:
        """Remove attachments not listed in cni.dev/valid-attachments."""
        with IPRoute() as host:
            maintenance.gc(args, conf, self.node(), host, self.ports)
