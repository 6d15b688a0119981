"""Reference model of Kubernetes NetworkPolicy semantics - no flows, just the spec.

This is what the compiled flows are checked against (unit tests on the fake
table, the e2e truth table on a real cluster), so it follows the API
documentation of networking.k8s.io/v1 NetworkPolicy, not the flow design:

* A pod is *isolated for egress* if some policy in its namespace selects it
  and has ``Egress`` in its policyTypes; likewise for ingress.
* A connection from ``src`` to ``dst`` is allowed if the source side allows
  it (not isolated for egress, or some egress rule of a selecting policy
  allows ``dst``) **and** the destination side allows it (not isolated for
  ingress, or some ingress rule of a selecting policy allows ``src``).
  Policies are additive: any allowing rule is enough.
* A rule allows a peer and a port if one of its peers matches (no peers =
  every peer) and one of its ports matches (no ports = every port of every
  protocol).
* A peer with ``podSelector`` only selects pods of the policy's namespace;
  ``namespaceSelector`` only selects all pods of matching namespaces; both
  together select matching pods in matching namespaces; ``ipBlock`` matches
  an address in ``cidr`` but in no ``except`` - for pods too (Kubernetes
  leaves that to the implementation; Sluice matches pod addresses).
* A port item matches its protocol and the port, ``port..endPort``, or any
  port if it has no port. A named port is looked up among the *destination*
  pod's container ports, by name and protocol; an external destination has
  no named ports.

Endpoints are a ``PodMeta`` or an IP address string; an address that belongs
to a pod in ``pods`` is that pod. A pod's connection uses its first address.
Traffic from the node itself (kubelet probes) is outside this model: Sluice
always allows it (docs/policy.md).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from flows.policy_model import (
    NAMESPACE_NAME_LABEL,
    IPBlock,
    NamespaceMeta,
    Peer,
    PodMeta,
    Policy,
    PortSpec,
    Rule,
)

Endpoint = PodMeta | str


def allowed(
    src: Endpoint,
    dst: Endpoint,
    protocol: str,
    port: int | None,
    policies: Iterable[Policy],
    namespaces: Iterable[NamespaceMeta],
    pods: Iterable[PodMeta] = (),
) -> bool:
    """Return whether a new connection ``src`` -> ``dst`` (``protocol``, dst ``port``) is allowed.

    ``protocol`` is "TCP", "UDP", "SCTP" or anything else (e.g. "ICMP", with
    ``port=None``). Pure; see the module docstring for the rules.
    """
    policies = list(policies)
    labels = {ns.name: ns.labels for ns in namespaces}
    src, dst = _as_endpoint(src, pods), _as_endpoint(dst, pods)
    connection = _Connection(src, dst, protocol, port, labels)
    return _egress_allows(connection, policies) and _ingress_allows(connection, policies)


class _Connection:
    """One new connection and the namespace labels needed to judge it."""

    def __init__(
        self,
        src: Endpoint,
        dst: Endpoint,
        protocol: str,
        port: int | None,
        ns_labels: Mapping[str, Mapping[str, str]],
    ) -> None:
        self.src, self.dst, self.protocol, self.port = src, dst, protocol, port
        self.ns_labels = ns_labels

    def namespace_labels(self, pod: PodMeta) -> Mapping[str, str]:
        """Labels of ``pod``'s namespace (just the name label if it is unknown)."""
        return self.ns_labels.get(pod.namespace, {NAMESPACE_NAME_LABEL: pod.namespace})


def _as_endpoint(endpoint: Endpoint, pods: Iterable[PodMeta]) -> Endpoint:
    if isinstance(endpoint, PodMeta):
        return endpoint
    address = str(ipaddress.IPv4Address(endpoint))
    return next((pod for pod in pods if address in pod.ips), address)


def _selecting(pod: PodMeta, policies: list[Policy], policy_type: str) -> list[Policy]:
    """Policies of ``policy_type`` that select ``pod`` (same namespace, podSelector)."""
    return [
        p
        for p in policies
        if policy_type in p.policy_types
        and p.namespace == pod.namespace
        and p.pod_selector.matches(pod.labels)
    ]


def _egress_allows(c: _Connection, policies: list[Policy]) -> bool:
    if not isinstance(c.src, PodMeta):
        return True  # external sources have no egress policy
    selecting = _selecting(c.src, policies, "Egress")
    if not selecting:
        return True  # not isolated for egress
    return any(_rule_allows(c, p, rule, peer=c.dst) for p in selecting for rule in p.egress)


def _ingress_allows(c: _Connection, policies: list[Policy]) -> bool:
    if not isinstance(c.dst, PodMeta):
        return True
    selecting = _selecting(c.dst, policies, "Ingress")
    if not selecting:
        return True
    return any(_rule_allows(c, p, rule, peer=c.src) for p in selecting for rule in p.ingress)


def _rule_allows(c: _Connection, policy: Policy, rule: Rule, peer: Endpoint) -> bool:
    peer_ok = not rule.peers or any(_peer_matches(c, policy, p, peer) for p in rule.peers)
    port_ok = not rule.ports or any(_port_matches(c, spec) for spec in rule.ports)
    return peer_ok and port_ok


def _peer_matches(c: _Connection, policy: Policy, peer: Peer, endpoint: Endpoint) -> bool:
    if peer.ip_block is not None:
        return _in_block(_address(endpoint), peer.ip_block)
    if not isinstance(endpoint, PodMeta) or not endpoint.ips:
        return False  # selectors select pods only
    if peer.namespace_selector is None:
        namespace_ok = endpoint.namespace == policy.namespace
    else:
        namespace_ok = peer.namespace_selector.matches(c.namespace_labels(endpoint))
    pod_ok = peer.pod_selector is None or peer.pod_selector.matches(endpoint.labels)
    return namespace_ok and pod_ok


def _address(endpoint: Endpoint) -> str | None:
    if isinstance(endpoint, PodMeta):
        return endpoint.ips[0] if endpoint.ips else None
    return endpoint


def _in_block(address: str | None, block: IPBlock) -> bool:
    if address is None:
        return False
    ip = ipaddress.ip_address(address)

    def inside(cidr: str) -> bool:
        net = ipaddress.ip_network(cidr)
        return net.version == ip.version and ip in net

    return inside(block.cidr) and not any(inside(e) for e in block.except_)


def _port_matches(c: _Connection, spec: PortSpec) -> bool:
    if spec.protocol != c.protocol:
        return False
    if spec.port is None:
        return True  # every port of the protocol
    if c.port is None:
        return False
    if isinstance(spec.port, str):
        return _named_port(c.dst, spec) == c.port
    return spec.port <= c.port <= (spec.end_port if spec.end_port is not None else spec.port)


def _named_port(dst: Endpoint, spec: PortSpec) -> int | None:
    """Number of ``spec``'s named port on the destination pod, or ``None``."""
    if not isinstance(dst, PodMeta) or spec.port not in dst.ports:
        return None
    protocol, number = dst.ports[str(spec.port)]
    return number if protocol == spec.protocol else None
