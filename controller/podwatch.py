"""Learn local pods from OVSDB: the CNI's Interface rows are the durable truth.

At start the model is rebuilt from every Sluice Interface's external_ids; then
row events (delivered on the IDL thread within milliseconds of the CNI's
commit) keep it current. A reconnect to ovsdb-server triggers a full resync,
because the event stream alone misses rows deleted while disconnected.

A pod is programmed as soon as its row appears, under the ``ofport_request``
the CNI chose, without waiting for ovs-vswitchd to open the port and report its
``ofport``. OpenFlow lets flows name a port that does not exist yet; they start
matching the moment vswitchd adds it. Once vswitchd reports a number that
differs from the request (it could not honour it), the pod is re-rendered under
the real number; ``ofport`` -1 (vswitchd cannot open the interface) takes the
pod's flows away until a later reconfiguration opens it.
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
    """What the REST API shows about a pod port beyond the flow model.

    ``assigned``: ovs-vswitchd has reported ``pod.ofport`` as the port's number
    (False while the pod runs under its ``ofport_request`` alone).
    """

    pod: PodPort
    port_name: str
    uid: str
    assigned: bool = True


def pod_ofport(ofport: Any, ofport_request: Any) -> tuple[int, bool] | None:
    """(number to program the pod under, assigned by vswitchd?) or None if unusable.

    ``ofport`` as vswitchd reports it (None until it opened the port, -1 when it
    could not), ``ofport_request`` as the CNI chose it. Numbers outside the pod
    range are unusable (flow cookies and the model require it).
    """
    if isinstance(ofport, int) and ofport != 0:
        number, assigned = ofport, True  # why: -1 falls out below, as out of range
    elif isinstance(ofport_request, int):
        number, assigned = ofport_request, False
    else:
        return None
    if not schema.POD_OFPORT_MIN <= number <= schema.POD_OFPORT_MAX:
        return None
    return number, assigned


def pod_from_row(
    name: str, ofport: Any, ext: dict[str, str], ofport_request: Any = None
) -> PodRecord | None:
    """Build a pod from an Interface's columns; None if it is not a usable Sluice pod."""
    if ext.get(schema.OWNER) != schema.OWNER_CNI:
        return None
    numbered = pod_ofport(ofport, ofport_request)
    if numbered is None:
        return None  # not numbered yet, failed to open, or outside the pod range
    ips = tuple(ip for ip in ext.get(schema.IPS, "").split(",") if ip)
    try:
        pod = PodPort(
            ofport=numbered[0],
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
    return PodRecord(pod, name, ext.get(schema.POD_UID, ""), assigned=numbered[1])


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
        self.client.on_resync(self.resync)
        self.resync()

    def resync(self) -> None:
        """Rebuild the pod set from the OVSDB replica (at start and after a reconnect)."""
        records = {}
        for port in ports.find_ports(self.client, **{schema.OWNER: schema.OWNER_CNI}):
            rec = pod_from_row(port.name, port.ofport, dict(port.external_ids), port.ofport_request)
            if rec is not None:
                records[port.name] = rec
        with self._lock:
            self._by_name = records
        self.state.replace_pods(r.pod for r in records.values())

    def _on_row(self, event: str, row: dict[str, Any]) -> None:
        name = str(row.get("name", ""))
        rec = None
        if event != "delete":
            ext = dict(row.get("external_ids") or {})
            rec = pod_from_row(name, row.get("ofport"), ext, row.get("ofport_request"))
        with self._lock:
            old = self._by_name.pop(name, None)
            if rec is not None:
                self._by_name[name] = rec
        if old is not None and (rec is None or old.pod.key != rec.pod.key):
            if rec is None and event != "delete":
                ofport = row.get("ofport")
                LOG.warning("pod port %s unusable (ofport %s): flows removed", name, ofport)
            self.state.remove_pod(old.pod.key)
        if rec is not None:
            _log_change(old, rec)
            self.state.set_pod(rec.pod)

    def records(self) -> list[PodRecord]:
        """The pods currently known."""
        with self._lock:
            return list(self._by_name.values())


def _log_change(old: PodRecord | None, new: PodRecord) -> None:
    """Log a new pod, and a number vswitchd assigned other than the one programmed."""
    pod = new.pod
    if old is None or old.pod.key != pod.key:
        LOG.info(
            "pod %s/%s on port %s: ofport %d (%s)",
            pod.namespace,
            pod.name,
            new.port_name,
            pod.ofport,
            "assigned" if new.assigned else "requested",
        )
    elif old.pod.ofport != pod.ofport:
        # why warn: the flows ran under the requested number until now; vswitchd
        # did not honour the request (a conflict), so they are re-rendered.
        LOG.warning(
            "pod %s/%s on port %s: ovs-vswitchd assigned ofport %d, not %d; re-rendering flows",
            pod.namespace,
            pod.name,
            new.port_name,
            pod.ofport,
            old.pod.ofport,
        )
