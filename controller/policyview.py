"""What the NetworkPolicies mean on this node, for the REST API's ``/v1/policies``.

Pure: reads a ``Snapshot``'s policy inputs and returns the frozen models of
``controller.view``. Which pods a policy selects and which addresses a rule's
peers cover come from the compiler's own resolution (``flows.policy``), so the
answer is what the flows enforce, not a second reading of the API text. Named
ports are looked up on the destination pods as the compiler does: for ingress
the selected pods, for egress the pods inside the rule's peer addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Literal

from controller.state import Snapshot
from controller.view import (
    AppliedPolicy,
    DirectionInfo,
    IPBlockInfo,
    NamedPortInfo,
    PeerInfo,
    PodPolicies,
    PodRef,
    PolicyInfo,
    PortInfo,
    RuleInfo,
    UnknownNamespace,
    UnknownPod,
)

# why private names: the view must resolve selectors and peer addresses exactly
# as the compiler does; these are that resolution, not a copy of it.
from flows.policy import _Cluster, _peer_spans
from flows.policy_model import LabelSelector, Peer, PodMeta, Policy, PortSpec, Rule

Direction = Literal["ingress", "egress"]
_TYPE: dict[Direction, Literal["Ingress", "Egress"]] = {"ingress": "Ingress", "egress": "Egress"}
ISOLATION_PREFIX = "policy/isolation/"


def policy_pods(snap: Snapshot) -> list[PodMeta]:
    """Every pod from the API server, ``ofport`` set for those on this node.

    The same pods ``controller.reconcile.policy_flows`` compiles with.
    """
    ofports = {(p.namespace, p.name): p.ofport for p in snap.pods.values()}
    out = []
    for meta in snap.k8s_pods.values():
        ofport = ofports.get((meta.namespace, meta.name))
        # why: replace() validates the pod again; most pods run elsewhere and keep None
        out.append(meta if ofport == meta.ofport else replace(meta, ofport=ofport))
    return out


def selector_text(selector: LabelSelector) -> str:
    """A label selector in kubectl syntax (``app=web,tier in (a,b),!legacy``); "" = all."""
    parts = [f"{k}={v}" for k, v in selector.match_labels.items()]
    for req in selector.match_expressions:
        if req.operator in ("In", "NotIn"):
            parts.append(f"{req.key} {req.operator.lower()} ({','.join(req.values)})")
        else:
            parts.append(req.key if req.operator == "Exists" else f"!{req.key}")
    return ",".join(parts)


class _Resolver:
    """One snapshot's pods and namespaces, resolved by the compiler, plus flow counts."""

    def __init__(self, snap: Snapshot, flow_counts: Mapping[str, int]) -> None:
        self.cluster = _Cluster(policy_pods(snap), snap.namespaces.values())
        self.policies = sorted(snap.policies.values(), key=lambda p: p.key)
        self.namespaces = set(snap.namespaces) | {p.namespace for p in self.cluster.pods}
        self.flow_counts = flow_counts
        self._selected: dict[str, list[PodMeta]] = {}

    def selected(self, policy: Policy) -> list[PodMeta]:
        """Pods ``policy`` applies to, on any node."""
        if policy.key not in self._selected:
            self._selected[policy.key] = self.cluster.selected(policy)
        return self._selected[policy.key]

    def pod(self, namespace: str, name: str) -> PodMeta:
        """The pod ``namespace/name``; raises ``UnknownNamespace`` / ``UnknownPod``."""
        if namespace not in self.namespaces:
            raise UnknownNamespace(namespace)
        for pod in self.cluster.by_namespace.get(namespace, ()):
            if pod.name == name:
                return pod
        raise UnknownPod(f"{namespace}/{name}")

    def rule(
        self, policy: Policy, direction: Direction, index: int, dsts: list[PodMeta] | None
    ) -> RuleInfo:
        """One rule; ``dsts`` are the destination pods of ingress (None for egress)."""
        rule: Rule = getattr(policy, direction)[index]
        key = f"policy/{policy.key}/{direction}/{index}"
        spans = _peer_spans(self.cluster, policy, rule)
        if dsts is None and any(isinstance(s.port, str) for s in rule.ports):
            dsts = [pod for pod in self.cluster.pods if _inside(pod, spans)]
        return RuleInfo(
            index=index,
            key=key,
            installed_flows=self.flow_counts.get(key, 0),
            peers=tuple(self._peer(policy, p) for p in rule.peers) if rule.peers else None,
            peer_cidrs=None if spans is None else _cidrs(spans),
            ports=tuple(_port(s, dsts or []) for s in rule.ports) if rule.ports else None,
        )

    def _peer(self, policy: Policy, peer: Peer) -> PeerInfo:
        def text(sel: LabelSelector | None) -> str | None:
            return None if sel is None else selector_text(sel)

        block = None
        pods: tuple[PodRef, ...] = ()
        if peer.ip_block is not None:
            cidr, excepts = peer.ip_block.cidr, peer.ip_block.except_
            block = IPBlockInfo.model_validate({"cidr": cidr, "except": excepts})
        else:
            found = self.cluster.peer_pods(policy.namespace, peer)
            pods = tuple(pod_ref(p) for p in found if p.ips)  # no address: never a peer
        return PeerInfo(
            pod_selector=text(peer.pod_selector),
            namespace_selector=text(peer.namespace_selector),
            ip_block=block,
            pods=pods,
        )


def pod_ref(pod: PodMeta) -> PodRef:
    """A pod's identity, addresses and whether it is on this node."""
    return PodRef(namespace=pod.namespace, name=pod.name, ips=pod.ips, local=pod.ofport is not None)


def _cidrs(spans: Iterable[tuple[int, int]]) -> tuple[str, ...]:
    """Inclusive integer address ranges as the fewest CIDRs."""
    return tuple(
        str(net)
        for low, high in spans
        for net in ipaddress.summarize_address_range(
            ipaddress.IPv4Address(low), ipaddress.IPv4Address(high)
        )
    )


def _inside(pod: PodMeta, spans: list[tuple[int, int]] | None) -> bool:
    """Whether one of ``pod``'s addresses lies in ``spans`` (None = every address)."""
    ints = [int(ipaddress.IPv4Address(ip)) for ip in pod.ips]
    return bool(ints) and (spans is None or any(lo <= i <= hi for i in ints for lo, hi in spans))


def _port(spec: PortSpec, dsts: list[PodMeta]) -> PortInfo:
    resolved = None
    if isinstance(spec.port, str):
        resolved = tuple(
            NamedPortInfo(pod=pod.key, port=pod.ports[spec.port][1])
            for pod in dsts
            if pod.ports.get(spec.port, ("", 0))[0] == spec.protocol
        )
    return PortInfo(
        protocol=spec.protocol, port=spec.port, end_port=spec.end_port, resolved=resolved
    )


def policies(
    snap: Snapshot, flow_counts: Mapping[str, int], namespace: str | None = None
) -> list[PolicyInfo]:
    """Every policy (or ``namespace``'s) with its selected pods and compiled rules.

    ``flow_counts`` maps flow keys to the number of flows installed under them.
    """
    res = _Resolver(snap, flow_counts)
    out = []
    for policy in res.policies:
        if namespace is not None and policy.namespace != namespace:
            continue
        selected = res.selected(policy)
        rules: dict[Direction, tuple[RuleInfo, ...]] = {"ingress": (), "egress": ()}
        ignored = []
        for direction, kind in _TYPE.items():
            count = len(getattr(policy, direction))
            if kind not in policy.policy_types:
                if count:
                    ignored.append(f"{count} {direction} rule(s): {kind} is not in policyTypes")
                continue
            # why: ingress named ports resolve on the pods the policy protects
            dsts = selected if direction == "ingress" else None
            rules[direction] = tuple(res.rule(policy, direction, i, dsts) for i in range(count))
        out.append(
            PolicyInfo(
                namespace=policy.namespace,
                name=policy.name,
                pod_selector=selector_text(policy.pod_selector),
                policy_types=policy.policy_types,
                selected_pods=tuple(pod_ref(p) for p in selected),
                ingress=rules["ingress"],
                egress=rules["egress"],
                ignored=tuple(ignored),
            )
        )
    return out


def pod_policies(
    snap: Snapshot, flow_counts: Mapping[str, int], namespace: str, name: str
) -> PodPolicies:
    """The policies selecting pod ``namespace/name`` per direction, and its isolation.

    Raises ``UnknownNamespace`` or ``UnknownPod`` if the controller does not know it.
    """
    res = _Resolver(snap, flow_counts)
    pod = res.pod(namespace, name)

    def direction(which: Direction) -> DirectionInfo:
        applied = []
        for policy in res.policies:
            if _TYPE[which] not in policy.policy_types or policy.namespace != pod.namespace:
                continue
            if any(p.key == pod.key for p in res.selected(policy)):
                dsts = [pod] if which == "ingress" else None
                count = len(getattr(policy, which))
                rules = tuple(res.rule(policy, which, i, dsts) for i in range(count))
                applied.append(AppliedPolicy(namespace=namespace, name=policy.name, rules=rules))
        return DirectionInfo(isolated=bool(applied), policies=tuple(applied))

    return PodPolicies(
        pod=pod_ref(pod),
        labels=dict(pod.labels),
        named_ports={n: f"{proto}/{number}" for n, (proto, number) in pod.ports.items()},
        isolation_flows=flow_counts.get(f"{ISOLATION_PREFIX}{pod.key}", 0),
        ingress=direction("ingress"),
        egress=direction("egress"),
    )
