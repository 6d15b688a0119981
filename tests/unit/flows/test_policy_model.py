"""NetworkPolicy input model: API-JSON parsing, defaults, and rejections that name the field."""

from __future__ import annotations

import copy
import re

import pytest

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

META = {"namespace": "prod", "name": "db"}


def policy(spec: dict) -> Policy:
    return Policy.from_k8s({"apiVersion": "networking.k8s.io/v1", "metadata": META, "spec": spec})


def test_full_policy_parses_as_the_api_returns_it():
    parsed = policy(
        {
            "podSelector": {"matchLabels": {"app": "db"}},
            "policyTypes": ["Egress", "Ingress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": {"app": "web"}}},
                        {"namespaceSelector": {"matchExpressions": [
                            {"key": "env", "operator": "In", "values": ["prod", "dev"]}]}},
                        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"a": "b"}}},
                        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                    ],
                    "ports": [
                        {"protocol": "TCP", "port": 5432},
                        {"port": "metrics"},
                        {"protocol": "UDP", "port": 32000, "endPort": 32768},
                        {"protocol": "SCTP"},
                    ],
                }
            ],
            "egress": [{}],
        }
    )  # fmt: skip
    assert parsed.key == "prod/db"
    assert parsed.policy_types == ("Ingress", "Egress")
    assert parsed.pod_selector == LabelSelector({"app": "db"})
    (rule,) = parsed.ingress
    assert rule.peers == (
        Peer(LabelSelector({"app": "web"})),
        Peer(None, LabelSelector(match_expressions=(Requirement("env", "In", ("dev", "prod")),))),
        Peer(LabelSelector({"a": "b"}), LabelSelector()),
        Peer(ip_block=IPBlock("10.0.0.0/8", ("10.1.0.0/16",))),
    )
    assert rule.ports == (
        PortSpec("TCP", 5432),
        PortSpec("TCP", "metrics"),
        PortSpec("UDP", 32000, 32768),
        PortSpec("SCTP"),
    )
    assert parsed.egress == (Rule(),)
    assert hash(parsed) == hash(policy(copy.deepcopy(_as_json(parsed))))


def _as_json(parsed: Policy) -> dict:
    # why: a second, differently-ordered spelling of the same policy
    return {
        "podSelector": {"matchLabels": {"app": "db"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "ports": [
                    {"port": 5432},
                    {"port": "metrics", "protocol": "TCP"},
                    {"protocol": "UDP", "port": 32000, "endPort": 32768},
                    {"protocol": "SCTP"},
                ],
                "from": [
                    {"podSelector": {"matchLabels": {"app": "web"}}},
                    {"namespaceSelector": {"matchExpressions": [
                        {"key": "env", "operator": "In", "values": ["dev", "prod", "dev"]}]}},
                    {"podSelector": {"matchLabels": {"a": "b"}}, "namespaceSelector": {}},
                    {"ipBlock": {"except": ["10.1.0.0/16"], "cidr": "10.0.0.0/8"}},
                ],
            }
        ],
        "egress": [{"to": [], "ports": []}],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        ({"podSelector": {}}, ("Ingress",)),
        ({"podSelector": {}, "egress": []}, ("Ingress",)),
        ({"podSelector": {}, "egress": [{}]}, ("Ingress", "Egress")),
        ({"podSelector": {}, "ingress": [{}], "egress": [{"to": []}]}, ("Ingress", "Egress")),
        ({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}, ("Egress",)),
        ({"podSelector": {}, "policyTypes": [], "egress": [{}]}, ("Ingress", "Egress")),
    ],
)
def test_policy_types_default_to_ingress_plus_egress_if_egress_rules_exist(spec, types):
    assert policy(spec).policy_types == types


def test_null_lists_from_the_python_client_mean_absent():
    parsed = policy({"podSelector": {"matchLabels": None, "matchExpressions": None},
                     "policyTypes": None, "ingress": [{"from": None, "ports": None}],
                     "egress": None})  # fmt: skip
    assert parsed.ingress == (Rule(),) and parsed.policy_types == ("Ingress",)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({}, "spec.podSelector"),
        ({"podSelector": {}, "bogus": 1}, "spec.bogus"),
        ({"podSelector": []}, "spec.podSelector"),
        ({"podSelector": {"matchLabels": {"a": 1}}}, "spec.podSelector.matchLabels.a"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
         "spec.podSelector.matchExpressions[0].values"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists",
                                                "values": ["x"]}]}},
         "spec.podSelector.matchExpressions[0].values"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Equals"}]}},
         "spec.podSelector.matchExpressions[0].operator"),
        ({"podSelector": {"matchExpressions": [{"operator": "Exists"}]}},
         "spec.podSelector.matchExpressions[0].key"),
        ({"podSelector": {}, "policyTypes": ["Ingress", "Ingress"]}, "spec.policyTypes"),
        ({"podSelector": {}, "policyTypes": ["Both"]}, "spec.policyTypes[0]"),
        ({"podSelector": {}, "ingress": {}}, "spec.ingress"),
        ({"podSelector": {}, "ingress": [{"to": []}]}, "spec.ingress[0].to"),
        ({"podSelector": {}, "egress": [{"from": []}]}, "spec.egress[0].from"),
        ({"podSelector": {}, "ingress": [{"from": [{}]}]}, "spec.ingress[0].from[0]"),
        ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"},
                                                    "podSelector": {}}]}]},
         "spec.ingress[0].from[0]"),
        ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {}}]}]},
         "spec.ingress[0].from[0].ipBlock.cidr"),
        ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.300/8"}}]}]},
         "spec.ingress[0].from[0].ipBlock.cidr"),
        ({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8",
                                                             "except": ["11.0.0.0/16"]}}]}]},
         "spec.egress[0].to[0].ipBlock.except[0]"),
        ({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8",
                                                             "except": ["10.0.0.0/8"]}}]}]},
         "spec.egress[0].to[0].ipBlock.except[0]"),
        ({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8",
                                                             "except": ["fd00::/64"]}}]}]},
         "spec.egress[0].to[0].ipBlock.except[0]"),
        ({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8",
                                                             "unknown": 1}}]}]},
         "spec.egress[0].to[0].ipBlock.unknown"),
        ({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]},
         "spec.ingress[0].ports[0].protocol"),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]},
         "spec.ingress[0].ports[0].port"),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": 65536}]}]},
         "spec.ingress[0].ports[0].port"),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": True}]}]},
         "spec.ingress[0].ports[0].port"),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": "80"}]}]},
         "spec.ingress[0].ports[0].port"),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": "Web_UI"}]}]},
         "spec.ingress[0].ports[0].port"),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 79}]}]},
         "spec.ingress[0].ports[0].endPort"),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": "web", "endPort": 90}]}]},
         "spec.ingress[0].ports[0].endPort"),
        ({"podSelector": {}, "ingress": [{"ports": [{"endPort": 90}]}]},
         "spec.ingress[0].ports[0].endPort"),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 70000}]}]},
         "spec.ingress[0].ports[0].endPort"),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": "90"}]}]},
         "spec.ingress[0].ports[0].endPort"),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "proto": "TCP"}]}]},
         "spec.ingress[0].ports[0].proto"),
    ],
)  # fmt: skip
def test_bad_policies_are_rejected_naming_the_field(spec, field):
    with pytest.raises(ValueError, match=f"^{re.escape(field)}: "):
        policy(spec)


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"spec": {"podSelector": {}}}, "metadata"),
        ({"metadata": {"name": "x"}, "spec": {"podSelector": {}}}, "metadata.namespace"),
        ({"metadata": {"namespace": "x"}, "spec": {"podSelector": {}}}, "metadata.name"),
        ({"metadata": META}, "spec"),
    ],
)
def test_policy_metadata_is_required(obj, field):
    with pytest.raises(ValueError, match=rf"^{field}: "):
        Policy.from_k8s(obj)


def test_constructors_validate_too():
    with pytest.raises(ValueError, match="^policyTypes: "):
        Policy("ns", "p", policy_types=())
    with pytest.raises(ValueError, match="^endPort: "):
        PortSpec("TCP", 100, 99)
    with pytest.raises(ValueError, match="^ofport: "):
        PodMeta("ns", "p", ofport=5)
    with pytest.raises(ValueError, match="^ips\\[0\\]: "):
        PodMeta("ns", "p", ips=("10.0.0.256",))
    with pytest.raises(ValueError, match="^ports\\['http'\\].protocol: "):
        PodMeta("ns", "p", ports={"http": ("HTTP", 80)})
    with pytest.raises(ValueError, match="^peer: "):
        Peer()


def test_namespace_always_carries_its_name_label():
    ns = NamespaceMeta.from_k8s({"metadata": {"name": "prod", "labels": {"env": "prod"}}})
    assert dict(ns.labels) == {"env": "prod", "kubernetes.io/metadata.name": "prod"}
    spoofed = NamespaceMeta("prod", {"kubernetes.io/metadata.name": "other"})
    assert spoofed.labels["kubernetes.io/metadata.name"] == "prod"
    assert NamespaceMeta.from_k8s({"metadata": {"name": "bare"}}).labels == {
        "kubernetes.io/metadata.name": "bare"
    }


POD = {
    "metadata": {"namespace": "prod", "name": "web-1", "labels": {"app": "web"}},
    "spec": {
        "containers": [
            {"name": "app", "ports": [{"name": "http", "containerPort": 8080},
                                      {"containerPort": 9999}]},
            {"name": "side", "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"}]},
        ]
    },
    "status": {"phase": "Running", "podIP": "10.244.1.5",
               "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}]},
}  # fmt: skip


def test_pod_from_k8s_keeps_labels_ipv4_addresses_and_named_ports():
    pod = PodMeta.from_k8s(POD, ofport=32768)
    assert pod == PodMeta(
        "prod", "web-1", {"app": "web"}, ("10.244.1.5",), 32768,
        {"http": ("TCP", 8080), "dns": ("UDP", 53)},
    )  # fmt: skip
    assert pod.key == "prod/web-1" and hash(pod) == hash(PodMeta.from_k8s(POD, ofport=32768))


@pytest.mark.parametrize(
    "change",
    [
        {"spec": {"hostNetwork": True, "containers": []}},
        {"status": {"phase": "Succeeded", "podIP": "10.244.1.5"}},
        {"status": {"phase": "Failed", "podIPs": [{"ip": "10.244.1.5"}]}},
        {"status": {"phase": "Pending"}},
    ],
)
def test_pods_without_their_own_live_address_get_none(change):
    assert PodMeta.from_k8s(POD | change).ips == ()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"metadata": {"name": "x"}}, "metadata.namespace"),
        ({"status": {"podIP": "banana"}}, "status.podIP"),
        ({"status": {"podIPs": [{"ip": "1.2.3"}]}}, r"status.podIPs\[0\].ip"),
        ({"spec": {"containers": [{"ports": [{"name": "http", "containerPort": 0}]}]}},
         r"spec.containers\[0\].ports\[0\].containerPort"),
        ({"spec": {"containers": [{"ports": [{"name": "http", "containerPort": 80,
                                              "protocol": "ICMP"}]}]}},
         r"spec.containers\[0\].ports\[0\].protocol"),
        ({"spec": {"containers": [{"ports": [{"name": "HTTP", "containerPort": 80}]}]}},
         r"spec.containers\[0\].ports\[0\].name"),
    ],
)  # fmt: skip
def test_bad_pods_are_rejected_naming_the_field(change, field):
    with pytest.raises(ValueError, match=rf"^{field}: "):
        PodMeta.from_k8s(POD | change)


@pytest.mark.parametrize(
    ("requirement", "labels", "expected"),
    [
        (Requirement("app", "In", ("a", "b")), {"app": "a"}, True),
        (Requirement("app", "In", ("a", "b")), {}, False),
        (Requirement("app", "NotIn", ("a",)), {"app": "b"}, True),
        (Requirement("app", "NotIn", ("a",)), {}, True),  # absent key satisfies NotIn
        (Requirement("app", "NotIn", ("a",)), {"app": "a"}, False),
        (Requirement("app", "Exists"), {"app": ""}, True),
        (Requirement("app", "Exists"), {}, False),
        (Requirement("app", "DoesNotExist"), {}, True),
        (Requirement("app", "DoesNotExist"), {"app": "x"}, False),
    ],
)
def test_label_requirements(requirement, labels, expected):
    assert requirement.matches(labels) is expected


def test_selector_is_the_and_of_labels_and_expressions_and_empty_matches_all():
    selector = LabelSelector({"app": "web"}, (Requirement("tier", "In", ("fe",)),))
    assert selector.matches({"app": "web", "tier": "fe", "x": "y"})
    assert not selector.matches({"app": "web"})
    assert not selector.matches({"tier": "fe"})
    assert LabelSelector().matches({}) and LabelSelector().matches({"a": "b"})


def test_ipblock_normalizes_host_bits_and_accepts_ipv6_like_the_api():
    assert IPBlock("10.1.2.3/8", ("10.1.0.0/16",)).cidr == "10.0.0.0/8"
    assert IPBlock("fd00::/48").cidr == "fd00::/48"
