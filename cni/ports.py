"""The CNI's view of OVSDB: the few port operations it needs, over one client.

`PortStore` is a Protocol so the commands can be exercised against real OVSDB
(`OvsdbPortStore`) in functional tests; nothing else implements it in production.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from ovsdb import podport, ports, schema
from ovsdb.connection import OvsdbClient
from ovsdb.errors import PortMissing
from ovsdb.ports import PortRecord


class PortStore(Protocol):
    """Port operations on the integration bridge."""

    def add_pod_port(
        self, bridge: str, name: str, external_ids: dict[str, str], timeout: float
    ) -> None: ...
    def wait_vswitchd(self, timeout: float) -> bool: ...
    def del_port(self, name: str, if_exists: bool = True) -> None: ...
    def find_pod_port(self, container_id: str, if_name: str) -> PortRecord | None: ...
    def pod_ports(self) -> list[PortRecord]: ...
    def bridge_exists(self, bridge: str) -> bool: ...
    def connected(self) -> bool: ...


class OvsdbPortStore:
    """PortStore over an `OvsdbClient` (its single IDL thread does the work)."""

    # why: a name deleted this long ago was applied by vswitchd unless it is stuck,
    # and then the ADD fails on its own; the cap bounds memory under DEL storms.
    REMOVAL_MEMORY_S = 60.0
    REMOVAL_MEMORY_MAX = 4096

    def __init__(self, client: OvsdbClient, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self._clock = clock
        self._guard = threading.Lock()
        # name -> when its removal was committed without waiting for ovs-vswitchd
        self._removed: dict[str, float] = {}

    def add_pod_port(
        self, bridge: str, name: str, external_ids: dict[str, str], timeout: float
    ) -> None:
        """Commit the pod's port in one transaction; ovs-vswitchd attaches it afterwards.

        # why: waiting for vswitchd's ofport cost several ms per ADD (more on a busy
        # node) and nothing in the result needs it; the controller learns the port
        # from its row once vswitchd numbered it. CHECK waits before judging it.
        """
        if self._recently_removed(name):
            # why: vswitchd keys ports by name; seeing the old row's removal and this
            # insert in one reconfigure, it would keep the deleted veth's netdev open.
            self.client.wait_vswitchd(timeout)
        ports.commit_pod_port(self.client, bridge, name, external_ids, timeout=timeout)

    def wait_vswitchd(self, timeout: float) -> bool:
        """Wait until ovs-vswitchd applied everything committed so far."""
        return self.client.wait_vswitchd(timeout)

    def del_port(self, name: str, if_exists: bool = True) -> None:
        """Delete port `name` (no error when absent and `if_exists`).

        Returns once OVSDB committed the removal, not when ovs-vswitchd applied it.
        # why: on a netdev bridge with many ports each removal costs vswitchd a
        # reconfigure, and concurrent DELs queued behind one another (burst DEL ~8x
        # the bridge plugin); the controller removes the flows from the OVSDB row.
        # why on the server: ADD commits on the plain connection too, so the IDL
        # replica may not show a port added a moment ago.
        """
        if self.client.can_transact:
            existed = podport.delete_port(self.client, name, self.client.timeout)
            if not existed and not if_exists:
                raise PortMissing(name)
        else:
            existed = ports.del_port(self.client, name, if_exists=if_exists, wait_vswitchd=False)
        if existed:
            self._remember_removal(name)

    def _remember_removal(self, name: str) -> None:
        now = self._clock()
        with self._guard:
            self._removed.pop(name, None)
            self._removed[name] = now
            while self._removed:
                oldest, when = next(iter(self._removed.items()))
                if (
                    len(self._removed) <= self.REMOVAL_MEMORY_MAX
                    and now - when < self.REMOVAL_MEMORY_S
                ):
                    break
                del self._removed[oldest]

    def _recently_removed(self, name: str) -> bool:
        with self._guard:
            when = self._removed.pop(name, None)
        return when is not None and self._clock() - when < self.REMOVAL_MEMORY_S

    def find_pod_port(self, container_id: str, if_name: str) -> PortRecord | None:
        """The port CNI made for (container id, ifname), if any."""
        return ports.find_pod_port(self.client, container_id, if_name)

    def pod_ports(self) -> list[PortRecord]:
        """Every port the CNI made."""
        return ports.find_ports(self.client, **{schema.OWNER: schema.OWNER_CNI})

    def bridge_exists(self, bridge: str) -> bool:
        """Whether `bridge` exists."""
        return ports.bridge_exists(self.client, bridge)

    def connected(self) -> bool:
        """Whether the OVSDB session is up right now."""
        return self.client.connected
