"""The policy compiler's flows: size, structure, keys, updates, wire format, host traffic."""

from __future__ import annotations

import random
import shutil
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from os_ken.ofproto import ofproto_protocol, ofproto_v1_3

from flows import cookies, ofmsg
from flows.cookies import Category
from flows.diff import diff
from flows.fake_table import FakeTable
from flows.fields import CtState
from flows.ir import Conjunction, Flow
from flows.pipeline import EGRESS_RULE, INGRESS_DEFAULT, INGRESS_RULE
from flows.policy import BASE_KEY, Band, allocate_priorities, flows_for_policies, port_masks
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
from flows.render import render, render_all
from tests.unit.flows.test_ofmsg import expected_ofp_parse
from tests.unit.flows.test_policy_harness import NODE_A, NODE_B, TwoNodes, node_flows, view
from tests.unit.flows.test_policy_truth import NAMESPACES, PODS, POLICIES

OFCTL = shutil.which("ovs-ofctl")
PROD = [NamespaceMeta("prod")]
RULE_TABLES = (INGRESS_RULE, EGRESS_RULE)


def sel(**labels: str) -> LabelSelector:
    return LabelSelector(labels)


def policy_flows(flows: dict[str, frozenset[Flow]]) -> list[Flow]:
    return [f for key, fs in flows.items() if key.startswith("policy/") for f in fs]


# -- size -------------------------------------------------------------------------------


def scale_cluster(n: int = 200) -> tuple[list[PodMeta], Policy]:
    # local pods 10.244.1.2.. on node A; peers elsewhere, every other address so that
    # the peer set does not collapse into a few prefixes
    local = [PodMeta("prod", f"db-{i}", {"app": "db"}, (f"10.244.1.{2 + i}",), 32768 + i)
             for i in range(n)]  # fmt: skip
    spaced = [f"10.244.{100 + i // 100}.{2 * (i % 100) + 1}" for i in range(n)]
    peers = [PodMeta("prod", f"web-{i}", {"app": "web"}, (ip,)) for i, ip in enumerate(spaced)]
    rule = Rule((Peer(sel(app="web")),), (PortSpec("TCP", 5432),))
    return local + peers, Policy("prod", "db", sel(app="db"), ingress=(rule,))


def test_one_policy_over_200_pods_with_200_peers_costs_the_sum_not_the_product():
    pods, policy = scale_cluster()
    flows = flows_for_policies([policy], pods, PROD, NODE_A)
    rule = flows["policy/prod/db/ingress/0"]
    by_kind = Counter(
        "conj_id" if "conj_id" in f.matches() else f"clause {f.actions[0].clause}" for f in rule
    )
    # 200 local pods (reg1) + 200 peers (nw_src) + 1 port + 1 conj_id flow, not 200 * 200
    assert by_kind == {"clause 1": 200, "clause 2": 200, "clause 3": 1, "conj_id": 1}
    isolation = [f for k, fs in flows.items() if k.startswith("policy/isolation/") for f in fs]
    assert len(isolation) == 200 and {f.table for f in isolation} == {INGRESS_DEFAULT}
    assert len(policy_flows(flows)) == 402 + 200 + len(flows[BASE_KEY])


def test_the_200_by_200_policy_still_decides_right_on_the_fake_table():
    pods, policy = scale_cluster()
    table = FakeTable()
    for flows in node_flows(NODE_A, pods, PROD, [policy]).values():
        table.add_all(flows)
    db, web = pods[199], pods[399]
    packet = _tcp(web.ips[0], db.ips[0], 5432, in_port=NODE_A.tunnel_ofport)
    assert table.lookup(packet).ports == (db.ofport,)
    assert table.lookup(packet | {"tcp_dst": 5433}).dropped
    assert table.lookup(packet | {"ip_src": "10.244.100.2"}).dropped  # no such peer


def _tcp(src: str, dst: str, port: int, in_port: int) -> dict:
    return {"in_port": in_port, "eth_type": 0x800, "eth_src": "02:00:00:00:99:99",
            "eth_dst": "aa:bb:cc:dd:ee:ff", "ip_src": src, "ip_dst": dst, "nw_ttl": 64,
            "ip_proto": 6, "tcp_src": 40000, "tcp_dst": port}  # fmt: skip


# -- port ranges ------------------------------------------------------------------------


def cover(low: int, high: int) -> list[tuple[int, int]]:
    """Independent minimal prefix cover: split the aligned block recursively."""

    def walk(start: int, bits: int) -> list[tuple[int, int]]:
        end = start + (1 << bits) - 1
        if end < low or start > high:
            return []
        if low <= start and end <= high:
            return [(start, 0xFFFF & ~((1 << bits) - 1))]
        return walk(start, bits - 1) + walk(start + (1 << (bits - 1)), bits - 1)

    return walk(0, 16)


@pytest.mark.parametrize(
    ("low", "high", "count"),
    [(80, 80, 1), (0, 65535, 1), (1, 65535, 16), (32000, 32768, 3), (1024, 2047, 1), (5, 10, 4)],
)
def test_port_masks_examples(low, high, count):
    assert len(port_masks(low, high)) == count
    assert sorted(port_masks(low, high)) == cover(low, high)


def test_port_masks_cover_exactly_with_the_fewest_prefixes():
    rng = random.Random(7)
    for _ in range(300):
        low = rng.randrange(0, 65536)
        high = rng.randrange(low, min(65536, low + rng.choice([2, 300, 70000])))
        masks = port_masks(low, high)
        assert sorted(masks) == cover(low, high)
        covered = [p for v, m in masks for p in range(v, v + (~m & 0xFFFF) + 1)]
        assert sorted(covered) == list(range(low, high + 1))
    with pytest.raises(ValueError):
        port_masks(10, 9)


def test_end_port_ranges_become_masked_matches_and_decide_at_the_edges():
    db = PodMeta("prod", "db", {"app": "db"}, ("10.244.1.3",), 32769)
    policy = Policy(
        "prod", "db", sel(app="db"), ingress=(Rule(ports=(PortSpec("TCP", 32000, 32768),)),)
    )
    flows = flows_for_policies([policy], [db], PROD, NODE_A)["policy/prod/db/ingress/0"]
    prio = next(iter(flows)).priority
    assert {line.split(", ", 2)[2] for line in render_all(flows)} == {
        f"priority={prio},{m} actions=conjunction({prio},{k}/2)"
        for k, m in [(1, "ip,reg1=0x8001"), (2, "tcp,tp_dst=0x7d00/0xff00"),
                     (2, "tcp,tp_dst=0x7e00/0xfe00"), (2, "tcp,tp_dst=32768")]
    } | {f"priority={prio},conj_id={prio},ip actions=goto_table:ConntrackCommit"}  # fmt: skip
    nodes = TwoNodes([db], PROD, [policy])
    for port, expected in [
        (31999, False),
        (32000, True),
        (32767, True),
        (32768, True),
        (32769, False),
    ]:
        assert nodes.delivered("8.8.8.8", db, "TCP", port) is expected


# -- SCTP -------------------------------------------------------------------------------


def test_an_sctp_only_rule_never_opens_tcp_or_udp():
    db = PodMeta("prod", "db", {"app": "db"}, ("10.244.1.3",), 32769, {"sig": ("SCTP", 9000)})
    web = PodMeta("prod", "web", {"app": "web"}, ("10.244.2.2",), 32768)
    rules = (
        Rule(ports=(PortSpec("SCTP"),)),
        Rule(ports=(PortSpec("SCTP", "sig"), PortSpec("SCTP", 80, 90))),
    )
    policy = Policy("prod", "db", sel(app="db"), ("Ingress", "Egress"), ingress=rules, egress=rules)
    nodes = TwoNodes([db, web], PROD, [policy])
    for port in (1, 80, 85, 9000, 40000, 65535):
        assert nodes.delivered(web, db, "SCTP", port)
        for protocol in ("TCP", "UDP"):
            assert not nodes.delivered(web, db, protocol, port)
            assert not nodes.delivered(db, web, protocol, port)
    assert not nodes.delivered(web, db, "ICMP", None)
    rule_flows = policy_flows({k: v for k, v in nodes.desired["node-a"].items() if "/db/" in k})
    protos = {f.matches()["ip_proto"].value for f in rule_flows if "ip_proto" in f.matches()}
    assert protos == {132}


# -- structure --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixed() -> dict[str, dict[str, frozenset[Flow]]]:
    return {n.name: node_flows(n, PODS, NAMESPACES, POLICIES) for n in (NODE_A, NODE_B)}


def test_keys_cookies_and_object_ids(fixed):
    for desired in fixed.values():
        for key, flows in desired.items():
            if not key.startswith("policy/"):
                continue
            ids = {cookies.object_of(f.cookie) for f in flows}
            assert {cookies.category_of(f.cookie) for f in flows} == {Category.POLICY}
            assert all(cookies.table_of(f.cookie) == f.table.table_id for f in flows)
            if key == BASE_KEY:
                assert ids == {0}
            elif key.startswith("policy/isolation/"):
                ns, name = key.split("/")[2:]
                assert ids == {
                    next(
                        p.ofport
                        for p in view(PODS, NODE_A if desired is fixed["node-a"] else NODE_B)
                        if p.key == f"{ns}/{name}"
                    )
                }
            else:
                assert ids == {cookies.name_object_id(key)}


def test_each_conjunction_owns_one_priority_and_has_its_conj_id_flow(fixed):
    for desired in fixed.values():
        owner: dict[tuple[str, int], str] = {}
        conj_ids: dict[tuple[str, int], set[int]] = defaultdict(set)
        for key, flows in desired.items():
            for f in flows:
                if f.table not in RULE_TABLES or key == BASE_KEY or not key.startswith("policy/"):
                    continue
                assert Band.RULE_MIN <= f.priority <= Band.RULE_MAX
                assert owner.setdefault((f.table.name, f.priority), key) == key
                for action in f.actions:
                    if isinstance(action, Conjunction):
                        assert action.conj_id == f.priority and action.n_clauses >= 2
                        conj_ids[(f.table.name, f.priority)].add(action.conj_id)
                if "conj_id" in f.matches():
                    assert f.matches()["conj_id"].value == f.priority
        flows = [f for fs in desired.values() for f in fs]
        for (table, _priority), ids in conj_ids.items():
            assert any(f.table.name == table and f.matches().get("conj_id") and
                       f.matches()["conj_id"].value in ids for f in flows)  # fmt: skip


def test_every_policy_flow_serializes_and_renders(fixed):
    dp = ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION)
    for desired in fixed.values():
        for flow in policy_flows(desired):
            for build in (ofmsg.add_flow, ofmsg.modify_flow, ofmsg.delete_flow):
                msg = build(dp, flow)
                msg.serialize()
                assert len(msg.buf) >= 56
            assert render(flow).startswith(f"cookie={flow.cookie:#x}, table={flow.table.name}")


@pytest.mark.skipif(OFCTL is None, reason="ovs-ofctl not installed")
def test_ovs_ofctl_reads_the_bytes_and_the_text_as_rendered(fixed, tmp_path: Path):
    dp = ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION)
    flows = sorted({f for d in fixed.values() for f in policy_flows(d)}, key=render)
    blob = tmp_path / "flows.of"
    blob.write_bytes(b"".join(_wire(ofmsg.add_flow(dp, f)) for f in flows))
    out = subprocess.run(
        [OFCTL, "ofp-parse", str(blob)], capture_output=True, text=True, check=True
    )
    assert [line.split("): ", 1)[1] for line in out.stdout.splitlines()] == [
        expected_ofp_parse(f) for f in flows
    ]
    text = tmp_path / "flows.txt"
    text.write_text("".join(render(f, names=False) + "\n" for f in flows))
    cmd = [OFCTL, "-O", "OpenFlow13", "parse-flows", str(text)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert out.stdout.count("OFPT_FLOW_MOD") == len(flows)


def _wire(msg) -> bytes:
    msg.serialize()
    return bytes(msg.buf)


def test_applying_the_delta_twice_leaves_the_table_unchanged(fixed):
    table = FakeTable()
    delta = diff(fixed["node-a"], {})
    table.apply(delta)
    before = table.flows()
    table.apply(delta)
    assert table.flows() == before and diff(fixed["node-a"], {"all": before}).empty


def test_no_policies_gives_only_the_shared_passes_and_remote_only_policies_nothing_here():
    assert set(flows_for_policies([], PODS, NAMESPACES, NODE_A)) == {BASE_KEY}
    remote_only = Policy("kube-system", "dns", sel(**{"k8s-app": "kube-dns"}))
    assert set(flows_for_policies([remote_only], view(PODS, NODE_A), NAMESPACES, NODE_A)) == {
        BASE_KEY
    }


def test_duplicates_are_rejected():
    with pytest.raises(ValueError, match="duplicate policy 'prod/db'"):
        flows_for_policies([POLICIES[0], POLICIES[0]], PODS, NAMESPACES, NODE_A)
    with pytest.raises(ValueError, match="duplicate pod 'prod/web'"):
        flows_for_policies([], [PODS[0], PODS[0]], NAMESPACES, NODE_A)


def test_nested_excepts_and_ipv6_blocks():
    db = PodMeta("prod", "db", {"app": "db"}, ("10.244.1.3",), 32769)
    block = IPBlock("10.0.0.0/8", ("10.1.10.0/24", "10.1.8.0/21"))  # the /21 holds the /24
    rule = Rule((Peer(ip_block=block), Peer(ip_block=IPBlock("fd00::/8"))))
    policy = Policy("prod", "db", sel(app="db"), ingress=(rule,))
    nodes = TwoNodes([db], PROD, [policy])
    for ip in ("10.1.9.1", "10.1.10.5", "10.1.16.1", "10.2.0.1", "11.0.0.1"):
        want = allowed(ip, db, "TCP", 80, [policy], PROD, [db])
        assert nodes.delivered(ip, db, "TCP", 80) is want
    assert not nodes.delivered("10.1.10.5", db, "TCP", 80)


# -- updates ----------------------------------------------------------------------------


def test_changing_one_rule_rewrites_only_that_rule():
    before = flows_for_policies(POLICIES, view(PODS, NODE_A), NAMESPACES, NODE_A)
    changed = [*POLICIES]
    db = changed[0]
    ports = (PortSpec("TCP", "pg"), PortSpec("TCP", 9101))
    changed[0] = Policy(
        db.namespace, db.name, db.pod_selector, ingress=(Rule(db.ingress[0].peers, ports),)
    )
    after = flows_for_policies(changed, view(PODS, NODE_A), NAMESPACES, NODE_A)
    delta = diff(after, before)
    touched = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert touched == {"policy/prod/db/ingress/0"}
    # tcp_dst=9100 -> 9101, nothing else
    assert [f.matches()["tcp_dst"].value for f in delta.deletes] == [9100]
    assert [f.matches()["tcp_dst"].value for f in delta.adds] == [9101]


def test_a_new_peer_pod_adds_one_flow_and_a_new_policy_leaves_others_alone():
    before = flows_for_policies(POLICIES, view(PODS, NODE_A), NAMESPACES, NODE_A)
    new_web = PodMeta("prod", "web3", {"app": "web"}, ("10.244.2.77",))
    after = flows_for_policies(POLICIES, view([*PODS, new_web], NODE_A), NAMESPACES, NODE_A)
    delta = diff(after, before)
    assert delta.deletes == () and delta.modifies == ()
    # one peer clause in each rule whose peers select it: prod/db ingress, prod/egress #1
    added = {(k, f) for k, fs in after.items() for f in fs if f in delta.adds}
    assert {k for k, _ in added} == {"policy/prod/db/ingress/0", "policy/prod/egress/egress/1"}
    for _key, flow in added:
        peer = flow.matches().get("ip_src") or flow.matches()["ip_dst"]
        assert peer.value == "10.244.2.77" and isinstance(flow.actions[0], Conjunction)
    assert len(delta.adds) == 2
    extra = Policy("prod", "extra", sel(app="db"), ingress=(Rule(),))  # db: already isolated
    grown = flows_for_policies([*POLICIES, extra], view(PODS, NODE_A), NAMESPACES, NODE_A)
    assert {k: v for k, v in grown.items() if k in before} == before


def probing_holds(allocation: dict[str, int]) -> bool:
    """Every slot sits at its home or past a run of taken priorities (linear probing)."""
    size = Band.RULE_MAX - Band.RULE_MIN + 1
    taken = set(allocation.values())
    for slot, priority in allocation.items():
        at = Band.RULE_MIN + cookies.name_object_id(slot) % size
        while at != priority:
            if at not in taken:
                return False
            at = Band.RULE_MIN + (at - Band.RULE_MIN + 1) % size
    return True


def test_priorities_are_unique_stable_and_bounded():
    slots = [f"policy/ns/p{i}/ingress/0#0" for i in range(2000)]
    first = allocate_priorities(slots)
    assert len(set(first.values())) == len(slots) and probing_holds(first)
    assert all(Band.RULE_MIN <= p <= Band.RULE_MAX for p in first.values())
    more = allocate_priorities([*slots, *(f"policy/ns/q{i}/egress/1#0" for i in range(500))])
    assert probing_holds(more)
    moved = [s for s in slots if more[s] != first[s]]
    # only slots in a run of taken priorities that a newcomer's home hit move: 2000 + 500
    # slots in 63000 priorities collide rarely, so almost every rule keeps its flows
    assert len(moved) <= len(slots) // 50
    assert allocate_priorities(reversed(slots)) == first  # order of input does not matter
    size = Band.RULE_MAX - Band.RULE_MIN + 1
    with pytest.raises(ValueError, match="at most"):
        allocate_priorities(f"s{i}" for i in range(size + 1))


# -- conntrack and host traffic --------------------------------------------------------


ISOLATED = PodMeta("prod", "db", {"app": "db"}, ("10.244.1.3",), 32769)
WEB = PodMeta("prod", "web", {"app": "web"}, ("10.244.2.2",), 32768)
DENY_BOTH = Policy("prod", "deny", sel(app="db"), ("Ingress", "Egress"))


def test_host_addresses_reach_an_isolated_pod_but_other_sources_via_gw0_do_not():
    nodes = TwoNodes([ISOLATED, WEB], PROD, [DENY_BOTH])
    for host in (NODE_A.gateway_ip, NODE_A.node_ip):
        assert nodes.delivered(host, ISOLATED, "TCP", 10250)
    assert not nodes.delivered("192.168.10.50", ISOLATED, "TCP", 80)
    # another node's host is not exempt: it arrives through the tunnel like any peer
    table = nodes.tables["node-a"]
    packet = _tcp(NODE_B.gateway_ip, ISOLATED.ips[0], 80, in_port=NODE_A.tunnel_ofport)
    assert table.lookup(packet).dropped


def test_service_traffic_is_judged_after_the_host_translated_it():
    allow_web = Policy("prod", "out", sel(app="db"), ("Egress",), egress=(
        Rule((Peer(sel(app="web")),), (PortSpec("TCP", 80),)),))  # fmt: skip
    nodes = TwoNodes([ISOLATED, WEB], PROD, [allow_web])
    table = nodes.tables["node-a"]
    mac = "02:00:00:00:80:01"
    to_cluster_ip = _tcp(ISOLATED.ips[0], "10.96.0.10", 80, ISOLATED.ofport) | {"eth_src": mac}
    assert table.lookup(to_cluster_ip).ports == (NODE_A.gateway_ofport,)
    # kube-proxy DNATs and sends it back in through gw0, client address unchanged
    back_in = _tcp(ISOLATED.ips[0], WEB.ips[0], 80, NODE_A.gateway_ofport)
    assert table.lookup(back_in).ports == (NODE_A.tunnel_ofport,)
    assert table.lookup(back_in | {"tcp_dst": 81}).dropped
    assert nodes.delivered(ISOLATED, WEB, "TCP", 80) and not nodes.delivered(
        ISOLATED, WEB, "TCP", 81
    )


def test_established_connections_survive_a_policy_that_now_denies_them():
    nodes = TwoNodes([ISOLATED, WEB], PROD, [])
    assert nodes.delivered(WEB, ISOLATED, "TCP", 80)
    table = nodes.tables["node-a"]
    new = flows_for_policies([DENY_BOTH], view([ISOLATED, WEB], NODE_A), PROD, NODE_A)
    old = {k: v for k, v in nodes.desired["node-a"].items() if k.startswith("policy/")}
    table.apply(diff(new, old))
    packet = _tcp(WEB.ips[0], ISOLATED.ips[0], 80, NODE_A.tunnel_ofport)
    assert table.lookup(packet).dropped  # a new connection is judged by the new policy
    established = packet | {"ct_state": CtState.TRK | CtState.EST}
    assert table.lookup(established).ports == (ISOLATED.ofport,)
    reply = _tcp(ISOLATED.ips[0], WEB.ips[0], 40000, ISOLATED.ofport)
    reply |= {"eth_src": "02:00:00:00:80:01", "ct_state": CtState.TRK | CtState.EST | CtState.RPL}
    assert table.lookup(reply).ports == (NODE_A.tunnel_ofport,)
