"""The controller's `ControllerView`: answers the REST API from memory only."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from dataclasses import dataclass

from controller import policyview
from controller.podwatch import PodWatcher
from controller.reconcile import POLICY_PREFIX, Reconciler
from controller.state import NodeState
from controller.switch import Switch
from controller.view import (
    FlowInfo,
    GatewayInfo,
    NodeInfo,
    PodInfo,
    PodPolicies,
    PolicyInfo,
    UnknownPod,
    UnknownTable,
)
from flows import cookies, pipeline
from flows.render import render
from ovsdb import schema


@dataclass(frozen=True)
class NodeFacts:
    """Static facts the view reports that the flow model does not hold."""

    name: str
    mode: str
    tunnel_type: str
    datapath_type: str
    bridge: str


class View:
    """Implements `ControllerView` and `PolicyView` (controller.view) over the controller."""

    def __init__(
        self,
        facts: NodeFacts,
        state: NodeState,
        switch: Switch,
        reconciler: Reconciler,
        pods: PodWatcher,
        threads: Callable[[], list[threading.Thread]],
        problems: Callable[[], list[str]] = list,
    ) -> None:
        self.facts = facts
        self.state = state
        self.switch = switch
        self.reconciler = reconciler
        self.podwatch = pods
        self._threads = threads
        self.problems = problems

    def node(self) -> NodeInfo:
        """This node's identity and addressing."""
        node = self.state.snapshot().node
        gateway = None
        if node is not None:
            gateway = GatewayInfo(
                name=schema.GATEWAY_PORT,
                ip=node.gateway_ip,
                mac=node.gateway_mac,
                ofport=node.gateway_ofport,
            )
        return NodeInfo(
            name=self.facts.name,
            mode=self.facts.mode,  # type: ignore[arg-type]
            tunnel_type=self.facts.tunnel_type,  # type: ignore[arg-type]
            pod_cidrs=node.pod_cidrs if node else (),
            gateway=gateway,
            node_ip=node.node_ip if node else None,
            datapath_type=self.facts.datapath_type,  # type: ignore[arg-type]
            bridge=self.facts.bridge,
            flow_round=self.reconciler.round if self.reconciler.converged.is_set() else None,
        )

    def pods(self) -> list[PodInfo]:
        """Pods plugged into the bridge."""
        out = []
        for rec in self.podwatch.records():
            pod = rec.pod
            out.append(
                PodInfo(
                    namespace=pod.namespace,
                    name=pod.name,
                    uid=rec.uid,
                    container_id=pod.container_id,
                    ifname=pod.ifname,
                    ofport=pod.ofport,
                    port_name=rec.port_name,
                    mac=pod.mac,
                    ips=tuple(str(ipaddress.ip_interface(ip).ip) for ip in pod.ips),
                )
            )
        return sorted(out, key=lambda p: (p.namespace, p.name, p.ifname))

    def flows(self, table: str | None, pod: str | None) -> list[FlowInfo]:
        """Installed flows, filtered by table name and/or pod "namespace/name"."""
        if table is not None and table not in self.tables():
            raise UnknownTable(table)
        ofports = None
        if pod is not None:
            ns, _, name = pod.partition("/")
            ofports = {
                r.pod.ofport
                for r in self.podwatch.records()
                if (r.pod.namespace, r.pod.name) == (ns, name)
            }
            if not ofports:
                raise UnknownPod(pod)
        out = []
        for flow in self.reconciler.installed_flows():
            if table is not None and flow.table.name != table:
                continue
            if ofports is not None and not (
                cookies.category_of(flow.cookie) == cookies.Category.POD
                and cookies.object_of(flow.cookie) in ofports
            ):
                continue
            out.append((flow.table.table_id, -flow.priority, render(flow), flow))
        return [
            FlowInfo(
                table=f.table.name,
                priority=f.priority,
                cookie=f.cookie,
                category=cookies.category_of(f.cookie).name.lower(),
                text=text,
            )
            for _, _, text, f in sorted(out, key=lambda t: t[:3])
        ]

    def tables(self) -> list[str]:
        """Pipeline tables in packet order."""
        return [name for _, name in sorted(pipeline.table_names().items())]

    def policies(self, namespace: str | None) -> list[PolicyInfo]:
        """NetworkPolicies as compiled here (controller.policyview)."""
        return policyview.policies(self.state.snapshot(), self._policy_flow_counts(), namespace)

    def pod_policies(self, namespace: str, name: str) -> PodPolicies:
        """The policies selecting one pod; raises UnknownNamespace / UnknownPod."""
        snap = self.state.snapshot()
        return policyview.pod_policies(snap, self._policy_flow_counts(), namespace, name)

    def _policy_flow_counts(self) -> dict[str, int]:
        # why dict(): one C-level copy of the reconciler's dict, which its thread
        # replaces entries of while we read.
        installed = dict(self.reconciler.installed)
        return {k: len(v) for k, v in installed.items() if k.startswith(POLICY_PREFIX)}

    def health(self) -> bool:
        """True while every worker thread runs."""
        return all(t.is_alive() for t in self._threads())

    def readiness(self) -> tuple[bool, list[str]]:
        """Ready once the switch is connected and flows converged."""
        reasons = []
        if self.state.snapshot().node is None:
            reasons.append("podCIDR unknown")
        if self.switch.datapath is None:
            reasons.append("switch not connected")
        elif not self.reconciler.converged.is_set():
            reasons.append("flows not converged")
        if not self.podwatch.client.connected:
            reasons.append("OVSDB not connected")
        reasons += self.problems()
        return not reasons, reasons
