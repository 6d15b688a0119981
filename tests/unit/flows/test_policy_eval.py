"""The reference model on the tricky corners of the NetworkPolicy API."""

from __future__ import annotations

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
    Rule,
)

NAMESPACES = [NamespaceMeta("prod", {"env": "prod"}), NamespaceMeta("dev", {"env": "dev"})]
WEB = PodMeta("prod", "web", {"app": "web"}, ("10.244.1.2",), ports={"http": ("TCP", 8080)})
DB = PodMeta("prod", "db", {"app": "db"}, ("10.244.1.3",), ports={"pg": ("TCP", 5432)})
DEV_WEB = PodMeta("dev", "web", {"app": "web"}, ("10.244.2.2",), ports={"http": ("TCP", 9090)})
OTHER_NS = PodMeta("other", "x", {"app": "web"}, ("10.244.2.9",))
PODS = [WEB, DB, DEV_WEB, OTHER_NS]
ALL = LabelSelector()


def sel(**labels: str) -> LabelSelector:
    return LabelSelector(labels)


def ok(src, dst, protocol="TCP", port=80, *policies: Policy) -> bool:
    return allowed(src, dst, protocol, port, policies, NAMESPACES, PODS)


def db_ingress(*rules: Rule) -> Policy:
    return Policy("prod", "db", sel(app="db"), ("Ingress",), ingress=rules)


def web_egress(*rules: Rule) -> Policy:
    return Policy("prod", "web", sel(app="web"), ("Egress",), egress=rules)


def test_no_policy_allows_everything():
    assert ok(WEB, DB) and ok("8.8.8.8", DB) and ok(DB, "8.8.8.8", "ICMP", None)


def test_selected_pod_with_no_rules_is_isolated_in_that_direction_only():
    deny = db_ingress()
    assert not ok(WEB, DB, "TCP", 80, deny)
    assert not ok("8.8.8.8", DB, "UDP", 53, deny)
    assert ok(DB, WEB, "TCP", 80, deny)  # egress of db is not isolated
    assert ok(WEB, OTHER_NS, "TCP", 80, deny)  # not selected


def test_rules_of_a_type_not_listed_in_policy_types_are_ignored():
    egress_only = Policy("prod", "p", sel(app="db"), ("Egress",), ingress=(Rule(),))
    assert ok(WEB, DB, "TCP", 80, egress_only)  # ingress not isolated at all
    assert not ok(DB, WEB, "TCP", 80, egress_only)  # egress isolated, no egress rules


def test_an_empty_rule_allows_everything_and_policies_add_up():
    assert ok("8.8.8.8", DB, "SCTP", 9, db_ingress(Rule()))
    only_web = db_ingress(Rule((Peer(sel(app="web")),)))
    only_5432 = Policy(
        "prod", "db2", sel(app="db"), ingress=(Rule(ports=(PortSpec("TCP", 5432),)),)
    )
    assert ok(WEB, DB, "TCP", 1, only_web, only_5432)
    assert ok("8.8.8.8", DB, "TCP", 5432, only_web, only_5432)
    assert not ok("8.8.8.8", DB, "TCP", 1, only_web, only_5432)


def test_both_ends_must_allow():
    allow_out = web_egress(Rule())
    deny_in = db_ingress()
    assert not ok(WEB, DB, "TCP", 80, allow_out, deny_in)
    assert not ok(WEB, DB, "TCP", 80, web_egress(), db_ingress(Rule()))
    assert ok(WEB, DB, "TCP", 80, allow_out, db_ingress(Rule((Peer(sel(app="web")),))))


@pytest.mark.parametrize(
    ("peer", "sources"),
    [
        (Peer(sel(app="web")), {"prod/web"}),  # podSelector alone: policy namespace only
        (Peer(None, sel(env="dev")), {"dev/web"}),  # namespaceSelector alone: all its pods
        (Peer(None, ALL), {"prod/web", "dev/web", "other/x"}),  # {} = every namespace
        (Peer(sel(app="web"), ALL), {"prod/web", "dev/web", "other/x"}),
        (Peer(sel(app="web"), sel(env="prod")), {"prod/web"}),  # both = AND
        (Peer(ALL, sel(env="nope")), set()),
        # unknown namespace objects still carry their name label
        (Peer(None, sel(**{"kubernetes.io/metadata.name": "other"})), {"other/x"}),
    ],
)
def test_peer_selectors(peer, sources):
    policy = db_ingress(Rule((peer,)))
    got = {p.key for p in (WEB, DEV_WEB, OTHER_NS) if ok(p, DB, "TCP", 80, policy)}
    assert got == sources


def test_ipblock_matches_external_and_pod_addresses_minus_except():
    policy = db_ingress(Rule((Peer(ip_block=IPBlock("10.244.0.0/16", ("10.244.2.0/24",))),)))
    assert ok(WEB, DB, "TCP", 80, policy)  # a pod, by its address
    assert ok("10.244.7.7", DB, "TCP", 80, policy)
    assert not ok(DEV_WEB, DB, "TCP", 80, policy)  # except
    assert not ok("10.244.2.200", DB, "TCP", 80, policy)
    assert not ok("8.8.8.8", DB, "TCP", 80, policy)
    assert ok("10.244.1.2", DB, "TCP", 80, db_ingress(Rule((Peer(sel(app="web")),))))  # IP = pod


def test_ipv6_blocks_match_no_ipv4_traffic():
    assert not ok("8.8.8.8", DB, "TCP", 80, db_ingress(Rule((Peer(ip_block=IPBlock("::/0")),))))


def test_named_ports_resolve_on_the_destination_pod_with_its_protocol():
    to_http = web_egress(Rule(ports=(PortSpec("TCP", "http"),)))
    assert ok(WEB, DEV_WEB, "TCP", 9090, to_http)  # dev/web's http is 9090...
    assert not ok(WEB, DEV_WEB, "TCP", 8080, to_http)  # ...not the source's 8080
    assert not ok(WEB, DB, "TCP", 8080, to_http)  # db has no port "http"
    assert not ok(WEB, "8.8.8.8", "TCP", 8080, to_http)  # outside has no named ports
    assert not ok(WEB, DEV_WEB, "UDP", 9090, web_egress(Rule(ports=(PortSpec("UDP", "http"),))))
    pg = db_ingress(Rule(ports=(PortSpec("TCP", "pg"),)))
    assert ok(WEB, DB, "TCP", 5432, pg) and not ok(WEB, DB, "TCP", 5433, pg)


def test_end_port_range_is_inclusive_and_port_alone_is_one_port():
    ranged = db_ingress(Rule(ports=(PortSpec("TCP", 32000, 32768),)))
    assert [ok(WEB, DB, "TCP", p, ranged) for p in (31999, 32000, 32768, 32769)] == [
        False,
        True,
        True,
        False,
    ]
    single = db_ingress(Rule(ports=(PortSpec("UDP", 53),)))
    assert ok(WEB, DB, "UDP", 53, single) and not ok(WEB, DB, "UDP", 54, single)


def test_protocol_without_port_opens_every_port_of_that_protocol_only():
    sctp = db_ingress(Rule(ports=(PortSpec("SCTP"),)))
    assert ok(WEB, DB, "SCTP", 1, sctp) and ok(WEB, DB, "SCTP", 65535, sctp)
    for protocol in ("TCP", "UDP"):
        assert not ok(WEB, DB, protocol, 1, sctp)
    assert not ok(WEB, DB, "ICMP", None, sctp)  # ports given: no ICMP
    assert ok(WEB, DB, "ICMP", None, db_ingress(Rule((Peer(sel(app="web")),))))


def test_traffic_between_external_addresses_is_not_policed():
    assert ok("8.8.8.8", "1.1.1.1", "TCP", 80, db_ingress(), web_egress())
