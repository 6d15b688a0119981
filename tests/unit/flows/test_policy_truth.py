"""The compiled flows decide exactly like the reference model ``flows.policy_eval``.

A fixed cluster with tricky policies is checked for every (source, destination,
protocol, port) combination; then seeded random clusters and policies are
checked on a sample of packets (property-style, without hypothesis).
"""

from __future__ import annotations

import itertools
import random

import pytest

from flows.policy_eval import allowed
from flows.policy_model import (
    IPBlock,
    LabelSelector,
    NamespaceMeta,
    Peer,
    PodMeta,
    Policy,
    PortSpec,
    Requirement,
    Rule,
)
from tests.unit.flows.test_policy_harness import TwoNodes

NAMESPACES = [
    NamespaceMeta("prod", {"env": "prod", "team": "a"}),
    NamespaceMeta("dev", {"env": "dev"}),
    NamespaceMeta("monitoring"),
    NamespaceMeta("kube-system"),
]
# fmt: off
PODS = [
    PodMeta("prod", "web", {"app": "web", "tier": "fe"}, ("10.244.1.2",), 32768,
            {"http": ("TCP", 8080)}),
    PodMeta("prod", "web2", {"app": "web", "tier": "fe"}, ("10.244.2.2",), 32768,
            {"http": ("TCP", 9090)}),
    PodMeta("prod", "db", {"app": "db"}, ("10.244.1.3",), 32769, {"pg": ("TCP", 5432)}),
    PodMeta("prod", "cache", {"app": "cache"}, ("10.244.2.4",), 32769,
            {"sig": ("SCTP", 9000), "dns": ("UDP", 53)}),
    PodMeta("dev", "web", {"app": "web"}, ("10.244.1.5",), 32770, {"http": ("TCP", 8080)}),
    PodMeta("dev", "tool", {"app": "tool"}, ("10.244.2.6",), 32770),
    PodMeta("monitoring", "prom", {"app": "prom"}, ("10.244.1.7",), 32771),
    PodMeta("kube-system", "dns", {"k8s-app": "kube-dns"}, ("10.244.2.8",), 32771,
            {"dns": ("UDP", 53), "dns-tcp": ("TCP", 53)}),
]
# fmt: on
EXTERNAL = ["8.8.8.8", "172.16.5.5", "172.16.9.9", "192.168.10.50"]
PORTS = [53, 80, 5432, 8080, 9000, 9090, 9100, 31999, 32000, 32500, 32768, 32769]


def sel(**labels: str) -> LabelSelector:
    return LabelSelector(labels)


def ns_named(name: str) -> LabelSelector:
    return sel(**{"kubernetes.io/metadata.name": name})


POLICIES = [
    Policy("prod", "db", sel(app="db"), ingress=(
        Rule((Peer(sel(app="web")), Peer(namespace_selector=ns_named("monitoring"))),
             (PortSpec("TCP", "pg"), PortSpec("TCP", 9100))),
    )),
    Policy("prod", "egress", LabelSelector(), ("Egress",), egress=(
        Rule((Peer(sel(**{"k8s-app": "kube-dns"}), LabelSelector()),),
             (PortSpec("UDP", 53), PortSpec("TCP", 53))),
        Rule((Peer(LabelSelector()),)),
        Rule((Peer(ip_block=IPBlock("172.16.0.0/16", ("172.16.9.0/24",))),),
             (PortSpec("TCP", 32000, 32768),)),
    )),
    Policy("prod", "cache", sel(app="cache"), ingress=(
        Rule((Peer(LabelSelector(match_expressions=(Requirement("app", "NotIn", ("tool",)),)),
                   LabelSelector(match_expressions=(Requirement("env", "In", ("prod", "dev")),))),),
             (PortSpec("SCTP", "sig"), PortSpec("UDP"))),
    )),
    Policy("dev", "web", sel(app="web"), ingress=(Rule(ports=(PortSpec("TCP", "http"),)),)),
    Policy("monitoring", "deny", LabelSelector()),
    Policy("kube-system", "dns", sel(**{"k8s-app": "kube-dns"}), ingress=(
        Rule((Peer(ip_block=IPBlock("10.244.0.0/16", ("10.244.1.5/32",))),),
             (PortSpec("UDP", "dns"), PortSpec("TCP", "dns-tcp"))),
    )),
    Policy("prod", "fe", sel(tier="fe"), ("Egress",), egress=(
        Rule((Peer(sel(app="web")),), (PortSpec("TCP", "http"),)),
    )),
]  # fmt: skip


def packets(pods, external, ports):
    """Every (src, dst, protocol, port) with at least one pod end and src != dst."""
    endpoints = [*pods, *external]
    for src, dst in itertools.permutations(endpoints, 2):
        if isinstance(src, str) and isinstance(dst, str):
            continue
        for protocol, port in [*itertools.product(("TCP", "UDP", "SCTP"), ports), ("ICMP", None)]:
            yield src, dst, protocol, port


def check(nodes: TwoNodes, cases) -> tuple[int, int]:
    """Assert the fake tables agree with the model on ``cases``; return (allowed, denied)."""
    counts = [0, 0]
    for src, dst, protocol, port in cases:
        want = allowed(src, dst, protocol, port, nodes.policies, nodes.namespaces, nodes.pods)
        got = nodes.delivered(src, dst, protocol, port)
        assert got == want, f"{_name(src)} -> {_name(dst)} {protocol}/{port}: flows say {got}"
        counts[want] += 1
    return counts[1], counts[0]


def _name(endpoint) -> str:
    return endpoint.key if isinstance(endpoint, PodMeta) else endpoint


def test_fixed_cluster_every_packet_agrees_with_the_reference_model():
    nodes = TwoNodes(PODS, NAMESPACES, POLICIES)
    yes, no = check(nodes, packets(PODS, EXTERNAL, PORTS))
    assert yes > 300 and no > 300  # both verdicts are well exercised


@pytest.mark.parametrize(
    ("src", "dst", "protocol", "port", "expected"),
    [
        (0, 2, "TCP", 5432, True),  # named port pg resolved on db
        (0, 2, "TCP", 5433, False),
        (6, 2, "TCP", 9100, True),  # monitoring namespace by name label
        (4, 2, "TCP", 5432, False),  # app=web but in dev: podSelector alone = same namespace
        (0, 1, "TCP", 9090, True),  # egress named port resolved on the destination (web2)
        (0, 1, "TCP", 8080, True),  # ...and allowed by the same-namespace rule anyway
        (0, "172.16.5.5", "TCP", 32768, True),  # endPort is inclusive
        (0, "172.16.5.5", "TCP", 32769, False),
        (0, "172.16.9.9", "TCP", 32000, False),  # except
        (0, 3, "SCTP", 9000, True),
        (0, 3, "TCP", 9000, False),  # cache takes SCTP on "sig" and any UDP port only
        (0, 3, "UDP", 31999, True),
        (5, 3, "UDP", 31999, False),  # app NotIn tool
        (4, 7, "UDP", 53, False),  # ipBlock except excludes dev/web's pod IP
        (2, 7, "UDP", 53, True),
    ],
)
def test_spot_checks(src, dst, protocol, port, expected):
    nodes = _fixed()
    src = PODS[src] if isinstance(src, int) else src
    dst = PODS[dst] if isinstance(dst, int) else dst
    assert allowed(src, dst, protocol, port, POLICIES, NAMESPACES, PODS) == expected
    assert nodes.delivered(src, dst, protocol, port) == expected


_FIXED: list[TwoNodes] = []


def _fixed() -> TwoNodes:
    if not _FIXED:
        _FIXED.append(TwoNodes(PODS, NAMESPACES, POLICIES))
    return _FIXED[0]


# -- random clusters ----------------------------------------------------------------------

LABELS = {"app": ["web", "db", "cache"], "tier": ["fe", "be"]}
NAMED = {"http": [("TCP", 80), ("TCP", 8080)], "dns": [("UDP", 53)], "sig": [("SCTP", 9000)]}
CIDRS = [
    ("10.244.2.0/24", ("10.244.2.0/28",)),
    ("0.0.0.0/0", ("10.0.0.0/8",)),
    ("172.16.0.0/16", ()),
    ("10.244.0.0/16", ("10.244.1.0/25", "10.244.2.128/25")),
]
RANDOM_PORTS = [53, 80, 443, 8080, 9000, 32000, 32767, 32768]


def random_selector(rng: random.Random, keys: dict[str, list[str]]) -> LabelSelector:
    kind = rng.choice(["all", "labels", "expr"])
    key = rng.choice(sorted(keys))
    if kind == "all":
        return LabelSelector()
    if kind == "labels":
        return LabelSelector({key: rng.choice(keys[key])})
    op = rng.choice(["In", "NotIn", "Exists", "DoesNotExist"])
    values = tuple(rng.sample(keys[key], 2)) if op in ("In", "NotIn") else ()
    return LabelSelector(match_expressions=(Requirement(key, op, values),))


def random_peer(rng: random.Random) -> Peer:
    kind = rng.choice(["pod", "ns", "both", "block"])
    if kind == "block":
        return Peer(ip_block=IPBlock(*rng.choice(CIDRS)))
    ns_keys = {"env": ["prod", "dev"], "kubernetes.io/metadata.name": ["prod", "dev"]}
    pod = random_selector(rng, LABELS) if kind != "ns" else None
    ns = random_selector(rng, ns_keys) if kind != "pod" else None
    return Peer(pod, ns)


def random_port(rng: random.Random) -> PortSpec:
    protocol = rng.choice(["TCP", "UDP", "SCTP"])
    kind = rng.choice(["any", "number", "range", "named"])
    if kind == "number":
        return PortSpec(protocol, rng.choice(RANDOM_PORTS))
    if kind == "range":
        low = rng.choice([53, 8000, 32000])
        return PortSpec(protocol, low, low + rng.choice([0, 1, 767, 1000]))
    if kind == "named":
        return PortSpec(protocol, rng.choice(sorted(NAMED)))
    return PortSpec(protocol)


def random_rule(rng: random.Random) -> Rule:
    peers = tuple(random_peer(rng) for _ in range(rng.choice([0, 1, 1, 2])))
    ports = tuple(random_port(rng) for _ in range(rng.choice([0, 1, 2])))
    return Rule(peers, ports)


def random_cluster(seed: int) -> TwoNodes:
    rng = random.Random(seed)
    namespaces = [NamespaceMeta("prod", {"env": "prod"}), NamespaceMeta("dev", {"env": "dev"})]
    pods = []
    for i in range(8):
        node, ofport = 1 + i % 2, 32768 + i // 2
        labels = {k: rng.choice(v) for k, v in LABELS.items() if rng.random() < 0.8}
        named = {k: rng.choice(v) for k, v in NAMED.items() if rng.random() < 0.6}
        ns = rng.choice(["prod", "dev"])
        pods.append(PodMeta(ns, f"p{i}", labels, (f"10.244.{node}.{10 + i}",), ofport, named))
    policies = []
    for i in range(rng.randint(1, 4)):
        types = rng.choice([("Ingress",), ("Egress",), ("Ingress", "Egress")])
        ingress = tuple(random_rule(rng) for _ in range(rng.randint(0, 2)))
        egress = tuple(random_rule(rng) for _ in range(rng.randint(0, 2)))
        selector = random_selector(rng, LABELS)
        ns = rng.choice(["prod", "dev"])
        policies.append(Policy(ns, f"np{i}", selector, types, ingress, egress))
    return TwoNodes(pods, namespaces, policies)


@pytest.mark.parametrize("seed", range(30))
def test_random_clusters_agree_with_the_reference_model(seed):
    nodes = random_cluster(seed)
    cases = list(packets(nodes.pods, ["8.8.8.8", "10.9.9.9", "172.16.1.1"], RANDOM_PORTS))
    check(nodes, random.Random(seed).sample(cases, 400))
