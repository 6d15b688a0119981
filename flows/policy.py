"""NetworkPolicy compiled to flows in EgressRule/EgressDefault and IngressRule/IngressDefault.

Pure: ``flows_for_policies(policies, pods, namespaces, node, round_)`` returns
``{key: flows}`` for ``flows.diff``. docs/policy.md has the design: only new
connections are judged (``-new+trk`` passes at ``Band.ESTABLISHED``, so
established connections outlive policy changes); egress is judged where the
source pod is local (``ip_src``), ingress where the destination is (``reg1``);
each conjunction of a rule owns a priority in ``Band.RULE_MIN..RULE_MAX`` and
uses it as conj_id, with the dimensions local pods x peers x ports; a selected
local pod gets a drop per isolated direction in the Default table; the node's
own addresses from gw0 skip ingress policy, and Service-CIDR packets skip
egress until the host sends them back in translated.
"""

from __future__ import annotations

import bisect
import enum
import ipaddress
import socket
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

from flows import cookies, fields, policy_conj
from flows.cookies import Category
from flows.fields import CtState
from flows.ir import Flow, Match
from flows.memo import RunMemo
from flows.model import NodeConfig
from flows.oxm import IP_PROTO_SCTP, IP_PROTO_TCP, IP_PROTO_UDP
from flows.pipeline import (
    CONNTRACK_COMMIT,
    EGRESS_DEFAULT,
    EGRESS_RULE,
    INGRESS_DEFAULT,
    INGRESS_RULE,
    L3_FORWARDING,
    Priority,
)
from flows.policy_conj import Clause, Conj, Dimension, Direction
from flows.policy_model import IPBlock, NamespaceMeta, Peer, PodMeta, Policy, PortSpec, Rule
from flows.recipes import IP

BASE_KEY = "policy/base"
Span = tuple[int, int]  # inclusive range of ports or IPv4 addresses as integers
_PROTO = {"TCP": (IP_PROTO_TCP, "tcp_dst"), "UDP": (IP_PROTO_UDP, "udp_dst")}
_PROTO["SCTP"] = (IP_PROTO_SCTP, "sctp_dst")
_ALL_PORTS = (0, 0xFFFF)


class Band(enum.IntEnum):
    """Priorities in the policy tables (the Default tables use ``Priority.NORMAL``)."""

    ESTABLISHED = 65000  # ct_state=-new+trk passes
    EXEMPT = 64000  # host -> pod ingress, pod -> Service CIDR first pass
    RULE_MAX = 63999  # one priority per conjunction, hashed from its rule key
    RULE_MIN = 1000


INGRESS = Direction("ingress", "Ingress", INGRESS_RULE, CONNTRACK_COMMIT, "ip_src")
EGRESS = Direction("egress", "Egress", EGRESS_RULE, L3_FORWARDING, "ip_dst")


def flows_for_policies(
    policies: Iterable[Policy],
    pods: Iterable[PodMeta],
    namespaces: Iterable[NamespaceMeta],
    node: NodeConfig,
    round_: int = 1,
) -> dict[str, frozenset[Flow]]:
    """Return the node's NetworkPolicy flows as ``{key: flows}`` (category POLICY).

    Args:
        policies: every NetworkPolicy of the cluster.
        pods: every pod of the cluster; local ones have ``ofport`` set.
        namespaces: every namespace (for namespaceSelector).
        node: this node (gateway/node IP, Service CIDR).
        round_: cookie round.
    Returns:
        ``BASE_KEY`` (object id 0): the established/host/Service passes;
        ``policy/<ns>/<name>/<ingress|egress>/<index>`` per rule with flows
        on this node (object id CRC-32 of the key); ``policy/isolation/<ns>/<pod>``
        per selected local pod (object id = ofport). Keys with no flows are left out.
    Raises ``ValueError`` on duplicate policies or pods, or more conjunctions
    in one table than ``Band`` has priorities. Pure.
    """
    with _PEER_DIMENSIONS.run(), policy_conj.run():
        return _compile(
            sorted(policies, key=lambda p: p.key), _Cluster(pods, namespaces), node, round_
        )


def _compile(
    policies: list[Policy], cluster: _Cluster, node: NodeConfig, round_: int
) -> dict[str, frozenset[Flow]]:
    """``flows_for_policies`` on sorted policies, inside the memos' run."""
    _unique("policy", [p.key for p in policies])
    desired: dict[str, set[Flow]] = {BASE_KEY: set(_base_flows(node, round_))}
    isolated: dict[PodMeta, set[str]] = {}
    for d in (INGRESS, EGRESS):
        planned = _plan(d, policies, cluster, isolated)
        priorities = allocate_priorities(slot for _, slot, _ in planned)
        for key, slot, conj in planned:
            cookie = cookies.make(round_, Category.POLICY, cookies.name_object_id(key))
            flows = policy_conj.conj_flows(d, conj, priorities[slot], cookie)
            desired.setdefault(key, set()).update(flows)
    for pod, types in isolated.items():
        desired[f"policy/isolation/{pod.key}"] = set(_isolation_flows(pod, types, round_))
    return {key: frozenset(flows) for key, flows in desired.items() if flows}


def _plan(
    d: Direction, policies: list[Policy], cluster: _Cluster, isolated: dict[PodMeta, set[str]]
) -> list[tuple[str, str, Conj]]:
    """Every conjunction of direction ``d`` with flows here, as ``(key, slot, conj)``.

    Records in ``isolated`` which local pods each policy type selects.
    """
    planned = []
    for policy in policies:
        if d.policy_type not in policy.policy_types:
            continue
        applied = [pod for pod in cluster.selected(policy) if pod.ofport is not None]
        for pod in applied:
            isolated.setdefault(pod, set()).add(d.policy_type)
        for index, rule in enumerate(getattr(policy, d.name)):
            key = f"policy/{policy.key}/{d.name}/{index}"
            conjs = _rule_conjs(d, cluster, policy, rule, applied)
            planned += [(key, f"{key}#{i}", conj) for i, conj in enumerate(conjs)]
    return planned


def allocate_priorities(slots: Iterable[str]) -> dict[str, int]:
    """Give each slot (``<rule key>#<n>``) its own priority in ``Band.RULE_MIN..RULE_MAX``.

    A slot's home is CRC-32 of its name modulo the band; slots are placed in
    (home, name) order at the first free priority at or after home (wrapping).
    So a slot keeps its priority while rules come and go, unless it shares a
    run of taken priorities with the newcomer - then only that run moves.
    Raises ``ValueError`` if there are more slots than priorities.
    """
    size = Band.RULE_MAX - Band.RULE_MIN + 1
    homes = {slot: cookies.name_object_id(slot) % size for slot in slots}
    if len(homes) > size:
        raise ValueError(f"{len(homes)} policy conjunctions in one table; at most {size}")
    taken: set[int] = set()
    out = {}
    for slot in sorted(homes, key=lambda s: (homes[s], s)):
        offset = homes[slot]
        while offset in taken:
            offset = (offset + 1) % size
        taken.add(offset)
        out[slot] = Band.RULE_MIN + offset
    return out


def port_masks(low: int, high: int) -> list[tuple[int, int]]:
    """Return the fewest ``(value, mask)`` pairs of 16-bit ports covering ``low..high``."""
    if not 0 <= low <= high <= 0xFFFF:
        raise ValueError(f"port range {low}..{high}")
    return [(start, 0xFFFF & ~(size - 1)) for start, size in _blocks(low, high, 16)]


def _blocks(low: int, high: int, bits: int) -> list[tuple[int, int]]:
    """The fewest aligned ``(start, size)`` blocks covering ``low..high`` (greedy is optimal)."""
    out = []
    while low <= high:
        size = low & -low if low else 1 << bits  # largest aligned block starting at low
        while size > high - low + 1:
            size //= 2
        out.append((low, size))
        low += size
    return out


class _Cluster:
    """Pods and namespace labels, with the selector look-ups the compiler needs."""

    def __init__(self, pods: Iterable[PodMeta], namespaces: Iterable[NamespaceMeta]) -> None:
        self.pods = sorted(pods, key=lambda p: p.key)
        _unique("pod", [p.key for p in self.pods])
        known = {ns.name: ns for ns in namespaces}
        self.ns_labels = {
            name: (known.get(name) or NamespaceMeta(name)).labels
            for name in {*known, *(p.namespace for p in self.pods)}
        }
        self.by_namespace: dict[str, list[PodMeta]] = {}
        for pod in self.pods:
            self.by_namespace.setdefault(pod.namespace, []).append(pod)
        # why: rules repeat selectors and pods repeat across peers; the
        # caches keep a recompute on every event cheap.
        # why inet_aton: PodMeta holds normalized IPv4 text; ipaddress took ≈ 0.5 s
        # of every compile over 10 000 pods.
        self.ints = {ip: _ip_int(ip) for pod in self.pods for ip in pod.ips}
        self._peers: dict[tuple[str, Peer], list[PodMeta]] = {}
        self._spans: dict[tuple[str, Peer], list[Span]] = {}

    def selected(self, policy: Policy) -> list[PodMeta]:
        """Pods ``policy`` applies to."""
        return self.peer_pods(policy.namespace, Peer(policy.pod_selector))

    def peer_pods(self, namespace: str, peer: Peer) -> list[PodMeta]:
        """Pods a selector peer of a policy in ``namespace`` selects (``policy_model.Peer``)."""
        found = self._peers.get((namespace, peer))
        if found is None:
            if peer.namespace_selector is None:
                names = [namespace]
            else:
                selector = peer.namespace_selector
                names = sorted(
                    n for n, labels in self.ns_labels.items() if selector.matches(labels)
                )
            pods = [pod for name in names for pod in self.by_namespace.get(name, ())]
            if peer.pod_selector is not None:
                pods = [pod for pod in pods if peer.pod_selector.matches(pod.labels)]
            found = self._peers[(namespace, peer)] = pods
        return found

    def peer_spans(self, namespace: str, peer: Peer) -> list[Span]:
        """Merged addresses of ``peer_pods(namespace, peer)``."""
        found = self._spans.get((namespace, peer))
        if found is None:
            pods = self.peer_pods(namespace, peer)
            ints = [self.ints[ip] for pod in pods for ip in pod.ips]
            found = self._spans[(namespace, peer)] = _merge([(i, i) for i in ints])
        return found


def _ip_int(ip: str) -> int:
    return int.from_bytes(socket.inet_aton(ip), "big")


def _rule_conjs(
    d: Direction, cluster: _Cluster, policy: Policy, rule: Rule, applied: list[PodMeta]
) -> list[Conj]:
    """Split ``rule`` into conjunctions; named ports split by what they resolve to."""
    nets = _peer_spans(cluster, policy, rule)
    if not applied or nets == []:
        return []
    peers = None if nets is None else _PEER_DIMENSIONS.get((d.peer_field, tuple(nets)))
    if d is INGRESS:  # named ports resolve against the local destination pods
        groups: dict[Dimension | None, list[Clause]] = {}
        for pod in applied:
            ports = _ports(rule.ports, pod)
            if ports != frozenset():
                groups.setdefault(ports, []).append((_to_pod(pod),))
        return [Conj(frozenset(local), peers, ports) for ports, local in _ordered(groups)]
    local = frozenset((Match("ip_src", ip),) for pod in applied for ip in pod.ips)
    if not local:
        return []
    numeric = tuple(s for s in rule.ports if not isinstance(s.port, str))
    conjs = [Conj(local, peers, _ports(numeric, None))] if numeric or not rule.ports else []
    named = tuple(s for s in rule.ports if isinstance(s.port, str))
    by_ports: dict[Dimension | None, list[Clause]] = {}
    for pod in cluster.pods if named else ():  # named ports resolve against each peer pod
        ips = [ip for ip in pod.ips if nets is None or _inside(cluster.ints[ip], nets)]
        ports = _ports(named, pod)
        if ips and ports:
            by_ports.setdefault(ports, []).extend((Match("ip_dst", ip),) for ip in ips)
    return conjs + [Conj(local, frozenset(dst), ports) for ports, dst in _ordered(by_ports)]


def _ordered(
    groups: dict[Dimension | None, list[Clause]],
) -> list[tuple[Dimension | None, list[Clause]]]:
    # why: a stable order gives stable slot names, hence stable priorities.
    return sorted(groups.items(), key=lambda kv: sorted(map(repr, kv[0] or ())))


def _peer_spans(cluster: _Cluster, policy: Policy, rule: Rule) -> list[Span] | None:
    """A rule's peer addresses as merged integer ranges; ``None`` = every address."""
    if not rule.peers:
        return None
    spans: list[Span] = []
    for peer in rule.peers:
        if peer.ip_block is not None:
            spans += _block_spans(peer.ip_block)
        else:
            spans += cluster.peer_spans(policy.namespace, peer)
    return _merge(spans)


def _block_spans(block: IPBlock) -> list[Span]:
    """``cidr`` minus every ``except`` as integer ranges (an IPv6 block has none)."""
    cidr = ipaddress.ip_network(block.cidr)
    if not isinstance(cidr, IPv4Network):
        return []
    holes = _merge([_span_of(IPv4Network(text)) for text in block.except_])
    low, high = _span_of(cidr)
    out = []
    for hole_low, hole_high in holes:
        if hole_low > low:
            out.append((low, hole_low - 1))
        low = max(low, hole_high + 1)
    return out + ([(low, high)] if low <= high else [])


def _span_of(net: IPv4Network) -> Span:
    return int(net.network_address), int(net.broadcast_address)


def _peer_dimension(key: tuple[str, tuple[Span, ...]]) -> Dimension:
    """One ``field=CIDR`` clause per CIDR of the fewest covering ``spans`` (``key``)."""
    field, spans = key
    return frozenset(
        (Match(field, f"{IPv4Address(start)}/{33 - size.bit_length()}"),)
        for low, high in spans
        for start, size in _blocks(low, high, 32)
    )


def _inside(address: int, spans: list[Span]) -> bool:
    at = bisect.bisect_right(spans, (address, 0xFFFFFFFF)) - 1
    return at >= 0 and spans[at][0] <= address <= spans[at][1]


def _ports(specs: tuple[PortSpec, ...], dst: PodMeta | None) -> Dimension | None:
    """The ports dimension; ``None`` = all; empty = nothing resolves (named ports).

    Named ports resolve against ``dst`` (skipped when it is ``None``).
    """
    if not specs:
        return None
    ranges: dict[str, list[tuple[int, int]]] = {}
    for spec in specs:
        span = _span(spec, dst)
        if span is not None:
            ranges.setdefault(spec.protocol, []).append(span)
    clauses: set[Clause] = set()
    for name, spans in ranges.items():
        proto, field = _PROTO[name]
        for low, high in _merge(spans):
            if (low, high) == _ALL_PORTS:
                clauses.add((Match("ip_proto", proto),))
                continue
            for value, mask in port_masks(low, high):
                port = Match(field, value, None if mask == 0xFFFF else mask)
                clauses.add((Match("ip_proto", proto), port))
    return frozenset(clauses)


def _span(spec: PortSpec, dst: PodMeta | None) -> tuple[int, int] | None:
    if spec.port is None:
        return _ALL_PORTS
    if isinstance(spec.port, int):
        return spec.port, spec.end_port if spec.end_port is not None else spec.port
    named = dst.ports.get(spec.port) if dst is not None else None
    if named is None or named[0] != spec.protocol:
        return None
    return named[1], named[1]


def _merge(spans: list[Span]) -> list[Span]:
    """Sorted, merged copies of the inclusive ranges ``spans`` (adjacent ones joined)."""
    out: list[Span] = []
    for low, high in sorted(spans):
        if out and low <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return out


_PEER_DIMENSIONS = RunMemo(_peer_dimension)


def _isolation_flows(pod: PodMeta, types: set[str], round_: int) -> list[Flow]:
    """Default-deny drops for a selected local pod, per isolated direction."""
    assert pod.ofport is not None  # why: only local pods are isolated here
    cookie = cookies.make(round_, Category.POLICY, pod.ofport)
    flows: list[Flow] = []
    if "Egress" in types:
        for ip in pod.ips:
            flows.append(
                Flow(EGRESS_DEFAULT, Priority.NORMAL, (IP, Match("ip_src", ip)), (), cookie)
            )
    if "Ingress" in types:
        flows.append(Flow(INGRESS_DEFAULT, Priority.NORMAL, (IP, _to_pod(pod)), (), cookie))
    return flows


def _to_pod(pod: PodMeta) -> Match:
    """Match packets L3Forwarding sends to local ``pod`` (its ofport in reg1)."""
    assert pod.ofport is not None
    return Match(fields.TARGET_OFPORT.field, pod.ofport)


def _base_flows(node: NodeConfig, round_: int) -> list[Flow]:
    """Established passes, host -> pod exemption, Service CIDR first pass."""
    cookie = cookies.make(round_, Category.POLICY, 0)
    established = Match("ct_state", *fields.ct_state(CtState.TRK, CtState.NEW))
    to_commit, to_l3 = (CONNTRACK_COMMIT.goto(),), (L3_FORWARDING.goto(),)
    flows = [
        Flow(EGRESS_RULE, Band.ESTABLISHED, (IP, established), to_l3, cookie),
        Flow(INGRESS_RULE, Band.ESTABLISHED, (IP, established), to_commit, cookie),
    ]
    # why: Kubernetes lets a node reach its pods whatever the policy (kubelet
    # probes). Only the host's own addresses are exempt: Service traffic the
    # host DNATs back in through gw0 keeps the client's address and is judged.
    for ip in sorted({node.gateway_ip, node.node_ip}):
        host = (IP, fields.FROM_GATEWAY.match(), Match("ip_src", ip))
        flows.append(Flow(INGRESS_RULE, Band.EXEMPT, host, to_commit, cookie))
    if node.service_cidr is not None:
        # why: a ClusterIP is not the real peer; the host's kube-proxy DNATs it
        # and sends it back in through gw0, where egress is judged on ip_src.
        service = (IP, Match("ip_dst", node.service_cidr))
        flows.append(Flow(EGRESS_RULE, Band.EXEMPT, service, to_l3, cookie))
    return flows


def _unique(what: str, keys: list[str]) -> None:
    if len(set(keys)) != len(keys):
        dupe = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"duplicate {what} {dupe!r}")
