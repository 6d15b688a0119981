"""controller.policyview: what the policies select and allow, checked against the compiler
and the reference model (flows.policy_eval) on the sample cluster of policy_sample.py."""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import replace

import pytest

from controller.policyview import policy_pods, selector_text
from controller.reconcile import policy_flows
from controller.view import (
    PodPolicies,
    PodRef,
    PolicyInfo,
    PolicyView,
    PortInfo,
    RuleInfo,
    UnknownNamespace,
    UnknownPod,
)
from flows.policy_eval import allowed
from flows.policy_model import LabelSelector, PodMeta, Policy, Requirement
from tests.unit.controller.policy_sample import make_state, make_view

VIEW = make_view(make_state())
SNAP = VIEW.state.snapshot()


def by_name(infos: list[PolicyInfo]) -> dict[str, PolicyInfo]:
    return {f"{p.namespace}/{p.name}": p for p in infos}


def names(pods: tuple[PodRef, ...]) -> list[str]:
    return [f"{p.namespace}/{p.name}" for p in pods]


def test_view_implements_the_policy_protocol() -> None:
    assert isinstance(VIEW, PolicyView)


def test_policies_list_selected_pods_and_whether_they_are_local() -> None:
    policies = by_name(VIEW.policies(None))
    assert sorted(policies) == ["x/a-egress", "x/ignored", "x/web-from-b", "y/deny-all"]
    web = policies["x/web-from-b"]
    assert web.policy_types == ("Ingress",)
    assert web.pod_selector == "app=a"
    assert [(p.name, p.local, p.ips) for p in web.selected_pods] == [
        ("a", True, ("10.244.1.2",)),
        ("a2", False, ("10.244.2.2",)),
        ("pending", False, ()),
    ]
    deny = policies["y/deny-all"]
    assert (deny.pod_selector, deny.ingress, deny.egress) == ("", (), ())
    assert names(deny.selected_pods) == ["y/c", "y/d"]


def test_namespace_filter() -> None:
    assert [p.name for p in VIEW.policies("y")] == ["deny-all"]
    assert VIEW.policies("nowhere") == []


def test_peers_resolve_to_pods_and_ip_blocks() -> None:
    (rule,) = by_name(VIEW.policies(None))["x/a-egress"].egress
    ns_peer, block_peer = rule.peers or ()
    assert (ns_peer.namespace_selector, ns_peer.pod_selector) == ("team=b", None)
    assert [(p.name, p.ips) for p in ns_peer.pods] == [
        ("c", ("10.244.2.4",)),
        ("d", ("10.244.1.5",)),
    ]
    assert block_peer.ip_block is not None and block_peer.pods == ()
    dumped = block_peer.ip_block.model_dump(by_alias=True)
    assert dumped == {"cidr": "10.0.0.0/8", "except": ("10.244.0.0/16",)}
    nets = [ipaddress.ip_network(c) for c in rule.peer_cidrs or ()]
    inside = {ip for ip in ("10.244.2.4", "10.244.1.5", "10.1.2.3", "10.245.0.1", "10.244.1.2")}
    inside = {ip for ip in inside if any(ipaddress.ip_address(ip) in n for n in nets)}
    assert inside == {"10.244.2.4", "10.244.1.5", "10.1.2.3", "10.245.0.1"}
    # merged: no two CIDRs overlap
    assert all(not a.overlaps(b) for a, b in itertools.combinations(nets, 2))


def test_named_ports_resolve_on_the_destination_pods() -> None:
    policies = by_name(VIEW.policies(None))
    (ingress,) = policies["x/web-from-b"].ingress
    web, numbered = ingress.ports or ()
    assert [(r.pod, r.port) for r in web.resolved or ()] == [("x/a", 8080), ("x/a2", 9090)]
    assert (numbered.port, numbered.end_port, numbered.resolved) == (80, 90, None)
    (egress,) = policies["x/a-egress"].egress
    web, dns = egress.ports or ()
    # the only pod inside the peers with a TCP port named "web"
    assert [(r.pod, r.port) for r in web.resolved or ()] == [("y/c", 7070)]
    assert (dns.protocol, dns.port) == ("UDP", 53)


def test_rules_of_an_unlisted_policy_type_are_reported_as_ignored() -> None:
    ignored = by_name(VIEW.policies(None))["x/ignored"]
    assert ignored.egress == ()
    assert ignored.ignored == ("1 egress rule(s): Egress is not in policyTypes",)
    (rule,) = ignored.ingress
    (peer,) = rule.peers or ()
    assert (peer.namespace_selector, peer.pod_selector) == ("team in (b)", "app=c")
    assert names(peer.pods) == ["y/c"] and rule.ports is None


def test_installed_flow_counts_come_from_the_compiled_keys() -> None:
    compiled = policy_flows(SNAP, 1)
    rules = [r for p in VIEW.policies(None) for r in (*p.ingress, *p.egress)]
    assert {r.key: r.installed_flows for r in rules} == {
        r.key: len(compiled.get(r.key, ())) for r in rules
    }
    assert all(r.installed_flows > 0 for r in rules)  # every rule selects a local pod here
    assert VIEW.pod_policies("x", "a").isolation_flows == len(compiled["policy/isolation/x/a"])
    assert VIEW.pod_policies("y", "c").isolation_flows == 0  # y/c runs elsewhere


def test_explain_isolation_per_direction() -> None:
    a = VIEW.pod_policies("x", "a")
    assert (a.pod.local, a.labels, a.named_ports) == (True, {"app": "a"}, {"web": "TCP/8080"})
    assert (a.ingress.isolated, a.egress.isolated) == (True, True)
    assert [p.name for p in a.ingress.policies] == ["web-from-b"]
    assert [p.name for p in a.egress.policies] == ["a-egress"]
    (rule,) = a.ingress.policies[0].rules
    web = (rule.ports or ())[0]
    assert [(r.pod, r.port) for r in web.resolved or ()] == [("x/a", 8080)]  # only this pod
    b = VIEW.pod_policies("x", "b")
    assert (b.ingress.isolated, b.egress.isolated) == (True, False)
    assert [p.name for p in b.ingress.policies] == ["ignored"]
    d = VIEW.pod_policies("y", "d")
    assert d.ingress.isolated and [(p.name, p.rules) for p in d.ingress.policies] == [
        ("deny-all", ())
    ]
    e = VIEW.pod_policies("z", "e")
    assert (e.ingress.isolated, e.egress.isolated) == (False, False)
    assert e.ingress.policies == e.egress.policies == ()


def test_explain_unknown_namespace_and_pod() -> None:
    with pytest.raises(UnknownNamespace) as ns:
        VIEW.pod_policies("nowhere", "a")
    assert ns.value.parameter == "namespace"
    with pytest.raises(UnknownPod) as pod:
        VIEW.pod_policies("x", "gone")
    assert (pod.value.parameter, str(pod.value)) == ("pod", "unknown pod 'x/gone'")


def test_selector_text() -> None:
    selector = LabelSelector(
        {"app": "web"},
        (
            Requirement("tier", "In", ("b", "a")),
            Requirement("env", "NotIn", ("dev",)),
            Requirement("canary", "Exists"),
            Requirement("legacy", "DoesNotExist"),
        ),
    )
    assert selector_text(selector) == "app=web,tier in (a,b),env notin (dev),canary,!legacy"
    assert selector_text(LabelSelector()) == ""


# --- the view's answer agrees with the reference model -------------------------------

PORTS = [53, 80, 85, 91, 7070, 8080, 9090]
EXTERNAL = ["10.1.2.3", "10.244.9.9", "8.8.8.8"]


def _rule_admits(rule: RuleInfo, peer_ip: str, dst: str | None, proto: str, port: int) -> bool:
    """Whether ``rule`` as the view reports it admits ``peer_ip`` and (proto, port) to ``dst``."""
    address = ipaddress.ip_address(peer_ip)
    peer_ok = rule.peer_cidrs is None or any(
        address in ipaddress.ip_network(c) for c in rule.peer_cidrs
    )

    def port_ok(p: PortInfo) -> bool:
        if p.protocol != proto:
            return False
        if p.port is None:
            return True
        if p.resolved is not None:
            return any(r.pod == dst and r.port == port for r in p.resolved)
        assert isinstance(p.port, int)
        return p.port <= port <= (p.end_port or p.port)

    return peer_ok and (rule.ports is None or any(port_ok(p) for p in rule.ports))


def _view_allows(
    info: PodPolicies, direction: str, peer: str, dst: str | None, proto: str, port: int
) -> bool:
    side = getattr(info, direction)
    rules = [r for p in side.policies for r in p.rules]
    return not side.isolated or any(_rule_admits(r, peer, dst, proto, port) for r in rules)


def _only(policy_type: str) -> list[Policy]:
    """The sample's policies judged in one direction only."""
    return [
        replace(p, policy_types=(policy_type,))
        for p in SNAP.policies.values()
        if policy_type in p.policy_types
    ]


@pytest.mark.parametrize("proto", ["TCP", "UDP", "SCTP"])
def test_explain_agrees_with_the_reference_model(proto: str) -> None:
    pods = [p for p in policy_pods(SNAP) if p.ips]
    namespaces = list(SNAP.namespaces.values())
    peers: list[PodMeta | str] = [*pods, *EXTERNAL]
    verdicts: set[tuple[str, bool]] = set()
    for pod in pods:
        info = VIEW.pod_policies(pod.namespace, pod.name)
        for peer, port in itertools.product(peers, PORTS):
            ip = peer.ips[0] if isinstance(peer, PodMeta) else peer
            want_in = allowed(peer, pod, proto, port, _only("Ingress"), namespaces, pods)
            got_in = _view_allows(info, "ingress", ip, pod.key, proto, port)
            assert got_in == want_in, (peer, pod.key, proto, port)
            want_out = allowed(pod, peer, proto, port, _only("Egress"), namespaces, pods)
            dst = peer.key if isinstance(peer, PodMeta) else None
            got_out = _view_allows(info, "egress", ip, dst, proto, port)
            assert got_out == want_out, (pod.key, peer, proto, port)
            verdicts |= {("in", want_in), ("out", want_out)}
    # both verdicts occur in both directions, so the comparison can fail
    assert verdicts == {("in", True), ("in", False), ("out", True), ("out", False)}
