"""Learn local pods from OVSDB: the CNI's Interface rows are the durable truth.

At start the model is rebuilt from every Sluice Interface's external_ids; then
row events (delivered on the IDL thread within milliseconds of the CNI's
commit) keep it current. A reconnect to ovsdb-server triggers a full resync,
because the event stream alone misses rows deleted while disconnected.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from controller.state import NodeState
from flows.model import PodPort
from ovsdb import ports, schema
from ovsdb.connection import OvsdbClient

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class PodRecord:
    """What the REST API shows about a pod port beyond the flow model."""

    pod: PodPort
    port_name: str
    uid: str


def pod_from_row(name: str, ofport: Any, ext: dict[str, str]) -> PodRecord | None:
    """Build a pod from an Interface's columns; None if it is not a usable Sluice pod."""
    if ext.get(schema.OWNER) != schema.OWNER_CNI:
        return None
    if not isinstance(ofport, int) or ofport < schema.POD_OFPORT_MIN:
        return None  # not (yet) given its number by ovs-vswitchd
    ips = tuple(ip for ip in ext.get(schema.IPS, "").split(",") if ip)
    try:
        pod = PodPort(
            ofport=ofport,
            mac=ext.get(schema.MAC, ""),
            ips=ips,
            namespace=ext.get(schema.POD_NAMESPACE, ""),
            name=ext.get(schema.POD_NAME, ""),
            container_id=ext.get(schema.CONTAINER_ID, ""),
            ifname=ext.get(schema.IF_NAME, "eth0"),
        )
    except ValueError as exc:
        LOG.warning("ignoring Interface %s: %s", name, exc)
        return None
    return PodRecord(pod, name, ext.get(schema.POD_UID, ""))


class PodWatcher:
    """Feeds `NodeState` with the pods plugged into br-int (keyed by Interface name)."""

    def __init__(self, client: OvsdbClient, state: NodeState) -> None:
        self.client = client
        self.state = state
        self._lock = threading.Lock()
        self._by_name: dict[str, PodRecord] = {}

    def start(self) -> None:
        """Watch Interface rows, then load what exists (events in between are merged)."""
        self.client.watch("Interface", self._on_row)
        self.resync()

    def resync(self) -> None:
        """Rebuild the pod set from the OVSDB replica."""
        records = {}
        for port in ports.find_ports(self.client, **{schema.OWNER: schema.OWNER_CNI}):
            rec = pod_from_row(port.name, port.ofport, dict(port.external_ids))
            if rec is not None:
                records[port.name] = rec
        with self._lock:
            self._by_name = records
        self.state.replace_pods(r.pod for r in records.values())

    def _on_row(self, event: str, row: dict[str, Any]) -> None:
        name = str(row.get("name", ""))
        rec = None
        if event != "delete":
            rec = pod_from_row(name, row.get("ofport"), dict(row.get("external_ids") or {}))
        with self._lock:
            old = self._by_name.pop(name, None)
            if rec is not None:
                self._by_name[name] = rec
        if old is not None and (rec is None or old.pod.key != rec.pod.key):
            self.state.remove_pod(old.pod.key)
        if rec is not None:
            self.state.set_pod(rec.pod)

    def records(self) -> list[PodRecord]:
        """The pods currently known."""
        with self._lock:
            return list(self._by_name.values())
