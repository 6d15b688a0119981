"""Prometheus metrics of sluice-controller, on a registry of their own.

The controller updates a ``Metrics`` object from wherever the event happens
(switch wrapper, reconciler, CNI server); ``controller/rest.py`` serves
``render()`` at ``/metrics``. Every method is safe to call from any thread.

Series (all prefixed ``sluice_``; docs/rest.md lists them too):

==============================  =========  =================  ==========================
name                            type       labels             updated by
==============================  =========  =================  ==========================
sluice_flows                    gauge      table              ``set_flows_per_table``
sluice_flow_mod_seconds         histogram                     ``observe_flow_mod``
sluice_flow_mods_total          counter    op                 ``count_flow_mods``
sluice_reconciles_total         counter    reason             ``count_reconcile``
sluice_cni_requests_total       counter    command, code      ``observe_cni_request``
sluice_cni_request_seconds      histogram  command            ``observe_cni_request``
sluice_pods                     gauge                         ``set_pods``
sluice_switch_connected         gauge                         ``set_switch_connected``
==============================  =========  =================  ==========================
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Final, Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

ReconcileReason = Literal["startup", "reconnect", "resync"]
FlowModOp = Literal["add", "modify", "delete"]

# why: the text format 0.0.4 is what every Prometheus version scrapes without
# negotiation, and our metric names need none of 1.0.0's UTF-8 escaping.
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4

# 1 ms ... 5 s: a healthy batch answers its barrier in a few ms; seconds mean
# a busy or stalled ovs-vswitchd.
FLOW_MOD_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# CNI ADD waits for OVSDB and the ofport, so it runs longer than a flow batch.
CNI_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CNI_COMMANDS: Final = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")


class Metrics:
    """The controller's metrics, registered on a private ``CollectorRegistry``.

    # why private: the global registry is process-wide, so two controllers in one
    # test process (or two test cases) would collide with "Duplicated timeseries".
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # why a lock: set_flows_per_table compares against the tables it set last
        # time; prometheus_client's own metric updates are already thread-safe.
        self._lock = threading.Lock()
        self._tables: set[str] = set()
        self._build_flow_metrics()
        self._build_node_metrics()

    def _build_flow_metrics(self) -> None:
        reg = self.registry
        self.flows = Gauge("sluice_flows", "Flows installed, per table.", ["table"], registry=reg)
        self.flow_mod_seconds = Histogram(
            "sluice_flow_mod_seconds",
            "Time from sending a batch of flow-mods to its barrier reply.",
            buckets=FLOW_MOD_BUCKETS,
            registry=reg,
        )
        self.flow_mods = Counter(
            "sluice_flow_mods", "Flow-mods sent, per operation.", ["op"], registry=reg
        )
        self.reconciles = Counter(
            "sluice_reconciles", "Full reconciliations, per reason.", ["reason"], registry=reg
        )
        # why pre-create: a series that exists at 0 lets rate() and alerts see
        # the first increment instead of a series appearing out of nowhere.
        for op in get_args(FlowModOp):
            self.flow_mods.labels(op=op)
        for reason in get_args(ReconcileReason):
            self.reconciles.labels(reason=reason)

    def _build_node_metrics(self) -> None:
        reg = self.registry
        self.cni_requests = Counter(
            "sluice_cni_requests",
            "CNI requests handled, per command and result code (0 = success).",
            ["command", "code"],
            registry=reg,
        )
        self.cni_request_seconds = Histogram(
            "sluice_cni_request_seconds",
            "Time to handle a CNI request, per command.",
            ["command"],
            buckets=CNI_BUCKETS,
            registry=reg,
        )
        self.pods = Gauge("sluice_pods", "Pod interfaces attached on this node.", registry=reg)
        self.switch_connected = Gauge(
            "sluice_switch_connected", "1 while the bridge's OpenFlow channel is up.", registry=reg
        )
        for command in CNI_COMMANDS:
            self.cni_request_seconds.labels(command=command)

    def observe_flow_mod(self, seconds: float) -> None:
        """Record one batch's send-to-barrier-reply time in seconds."""
        self.flow_mod_seconds.observe(seconds)

    def count_flow_mods(self, *, add: int = 0, modify: int = 0, delete: int = 0) -> None:
        """Add the numbers of flow-mods just sent, per operation (from a diff)."""
        for op, n in (("add", add), ("modify", modify), ("delete", delete)):
            if n < 0:
                raise ValueError(f"{op}: flow-mod count must be >= 0, got {n}")
            if n:
                self.flow_mods.labels(op=op).inc(n)

    def count_reconcile(self, reason: ReconcileReason) -> None:
        """Count one full reconciliation; ``reason`` is startup, reconnect or resync."""
        if reason not in get_args(ReconcileReason):
            raise ValueError(f"unknown reconcile reason {reason!r}")
        self.reconciles.labels(reason=reason).inc()

    def observe_cni_request(self, command: str, code: int, seconds: float) -> None:
        """Record one CNI request: ``command`` (ADD, DEL, ...), CNI result code, duration.

        ``code`` is 0 on success, else the CNI error code the plugin returned.
        """
        # why the check: label values are series; a free-form command would
        # let a misbehaving runtime create unbounded series.
        if command not in CNI_COMMANDS:
            raise ValueError(f"unknown CNI command {command!r}")
        self.cni_requests.labels(command=command, code=str(code)).inc()
        self.cni_request_seconds.labels(command=command).observe(seconds)

    def set_flows_per_table(self, counts: Mapping[str, int]) -> None:
        """Replace the per-table flow counts; tables missing from ``counts`` are dropped."""
        with self._lock:
            for table in self._tables - counts.keys():
                self.flows.remove(table)
            for table, n in counts.items():
                self.flows.labels(table=table).set(n)
            self._tables = set(counts)

    def set_pods(self, n: int) -> None:
        """Set the number of pod interfaces attached on this node."""
        self.pods.set(n)

    def set_switch_connected(self, connected: bool) -> None:
        """Set whether the bridge's OpenFlow channel is up."""
        self.switch_connected.set(1 if connected else 0)

    def render(self) -> bytes:
        """All series in the Prometheus text exposition format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)
