"""A small NetworkPolicy truth model for tests/e2e/test_netpol_truth.py.

Written from the networking.k8s.io/v1 API text, straight on the raw policy
dicts the test applies (no ``flows`` import), so that a bug in Sluice's
parser (flows/policy_model.py) or compiler (flows/policy.py) cannot hide in
the expected matrix too.

* ``policyTypes`` defaults as the API server does: Ingress, plus Egress if
  the spec has a non-empty egress list.
* A pod isolated for a direction accepts only what some rule of a policy of
  its namespace that selects it allows; a connection needs the source's
  egress and the destination's ingress.
* Peers: podSelector alone = own namespace; namespaceSelector (with or
  without podSelector) = pods of matching namespaces; ipBlock = pod address
  in ``cidr`` and in no ``except`` (Sluice matches pod addresses).
* Ports: no ports = everything; protocol defaults to TCP; no port = any port
  of the protocol; a named port is the destination pod's container port of
  that name and protocol.
* Namespaces carry ``kubernetes.io/metadata.name`` (Sluice assumes it even
  on a v1.20 API server).
* A pod connecting to its own IP never leaves its netns (loopback), so the
  diagonal is always allowed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass
class Pod:
    """One pod of the topology as the model sees it."""

    namespace: str
    name: str
    ip: str
    labels: dict[str, str]
    ports: dict[tuple[str, str], int] = field(default_factory=dict)  # (name, proto) → number

    @property
    def key(self) -> str:
        """``ns/name``."""
        return f"{self.namespace}/{self.name}"


def selector_matches(sel: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """LabelSelector semantics ({} and None select everything)."""
    if not sel:
        return True
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for req in sel.get("matchExpressions") or []:
        key, op, values = req["key"], req["operator"], req.get("values") or []
        if op == "In":
            ok = key in labels and labels[key] in values
        elif op == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif op == "Exists":
            ok = key in labels
        elif op == "DoesNotExist":
            ok = key not in labels
        else:
            raise ValueError(op)
        if not ok:
            return False
    return True


def policy_types(spec: dict[str, Any]) -> list[str]:
    """spec.policyTypes, defaulted like the API server."""
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress"] + (["Egress"] if spec.get("egress") else [])


class Model:
    """Evaluates connections between the topology's pods under a set of policies."""

    def __init__(
        self, pods: list[Pod], ns_labels: dict[str, dict[str, str]], policies: list[dict]
    ) -> None:
        self.pods = pods
        self.ns_labels = {ns: {**labels, NAME_LABEL: ns} for ns, labels in ns_labels.items()}
        self.policies = policies

    def _selecting(self, pod: Pod, direction: str) -> list[dict[str, Any]]:
        return [
            p
            for p in self.policies
            if p["metadata"]["namespace"] == pod.namespace
            and direction in policy_types(p["spec"])
            and selector_matches(p["spec"].get("podSelector"), pod.labels)
        ]

    def _peer(self, policy_ns: str, peer: dict[str, Any], pod: Pod) -> bool:
        if "ipBlock" in peer:
            ip = ipaddress.ip_address(pod.ip)
            block = peer["ipBlock"]
            return ip in ipaddress.ip_network(block["cidr"]) and not any(
                ip in ipaddress.ip_network(e) for e in block.get("except") or []
            )
        if "namespaceSelector" in peer:
            ns_ok = selector_matches(peer["namespaceSelector"], self.ns_labels[pod.namespace])
        else:
            ns_ok = pod.namespace == policy_ns
        return ns_ok and selector_matches(peer.get("podSelector"), pod.labels)

    @staticmethod
    def _port(item: dict[str, Any], dst: Pod, proto: str, port: int) -> bool:
        if item.get("protocol", "TCP") != proto:
            return False
        if "port" not in item:
            return True
        want = item["port"]
        if isinstance(want, str):
            return dst.ports.get((want, proto)) == port
        return want == port

    def _rules_allow(
        self, policies: list[dict], direction: str, peer: Pod, dst: Pod, proto: str, port: int
    ) -> bool:
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        for p in policies:
            ns = p["metadata"]["namespace"]
            for rule in p["spec"].get(key) or []:
                peers = rule.get(peers_key) or []
                ports = rule.get("ports") or []
                if (not peers or any(self._peer(ns, x, peer) for x in peers)) and (
                    not ports or any(self._port(i, dst, proto, port) for i in ports)
                ):
                    return True
        return False

    def allowed(self, src: Pod, dst: Pod, proto: str, port: int) -> bool:
        """Whether a new ``proto`` connection src → dst:port is allowed."""
        if src is dst:
            return True
        egress = self._selecting(src, "Egress")
        if egress and not self._rules_allow(egress, "Egress", dst, dst, proto, port):
            return False
        ingress = self._selecting(dst, "Ingress")
        return not ingress or self._rules_allow(ingress, "Ingress", src, dst, proto, port)

    def matrix(self, proto: str, port: int) -> dict[tuple[str, str], bool]:
        """(src key, dst key) → allowed, over every pair of pods."""
        return {
            (s.key, d.key): self.allowed(s, d, proto, port) for s in self.pods for d in self.pods
        }


def render(matrix: dict[tuple[str, str], bool], keys: list[str], other: dict | None = None) -> str:
    """The matrix as text ('.' allowed, 'X' denied; '*' marks a cell differing from *other*)."""
    lines = ["      " + " ".join(k.replace("/", "") for k in keys)]
    for s in keys:
        cells = []
        for d in keys:
            c = "." if matrix[(s, d)] else "X"
            if other is not None and other[(s, d)] != matrix[(s, d)]:
                c += "*"
            cells.append(c.ljust(2))
        lines.append(f"{s.replace('/', ''):>5} " + " ".join(cells))
    return "\n".join(lines)
