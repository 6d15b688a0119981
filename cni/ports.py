"""The CNI's view of OVSDB: the few port operations it needs, over one client.

`PortStore` is a Protocol so the commands can be exercised against real OVSDB
(`OvsdbPortStore`) in functional tests; nothing else implements it in production.
"""

from __future__ import annotations

from typing import Protocol

from ovsdb import ports, schema
from ovsdb.connection import OvsdbClient
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

    def __init__(self, client: OvsdbClient) -> None:
        self.client = client

    def add_pod_port(
        self, bridge: str, name: str, external_ids: dict[str, str], timeout: float
    ) -> None:
        """Commit the pod's port in one transaction; ovs-vswitchd attaches it afterwards.

        # why: waiting for vswitchd's ofport cost several ms per ADD (more on a busy
        # node) and nothing in the result needs it; the controller learns the port
        # from its row once vswitchd numbered it. CHECK waits before judging it.
        """
        ports.commit_pod_port(self.client, bridge, name, external_ids, timeout=timeout)

    def wait_vswitchd(self, timeout: float) -> bool:
        """Wait until ovs-vswitchd applied everything committed so far."""
        return self.client.wait_vswitchd(timeout)

    def del_port(self, name: str, if_exists: bool = True) -> None:
        """Delete port `name` (no error when absent and `if_exists`)."""
        ports.del_port(self.client, name, if_exists=if_exists)

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
