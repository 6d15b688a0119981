"""NetworkPolicy input state (networking.k8s.io/v1) as frozen, hashable dataclasses.

Independent of the kubernetes client: ``Policy.from_k8s``, ``PodMeta.from_k8s``
and ``NamespaceMeta.from_k8s`` read plain dicts as the API returns them in
JSON (``ApiClient().sanitize_for_serialization(obj)`` or raw JSON), apply the
API defaults and raise ``ValueError`` naming the bad field, e.g.
``spec.ingress[0].ports[1].endPort: 79 is below port 80``. Constructors
validate the same way. Only IPv4 pod addresses are kept (Sluice is IPv4-only);
IPv6 ipBlocks are accepted, as the API accepts them, and simply match nothing.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar, get_args

from flows.frozenmap import FrozenMap
from ovsdb import schema

Protocol = Literal["TCP", "UDP", "SCTP"]
PolicyType = Literal["Ingress", "Egress"]
Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
PROTOCOLS: Final[tuple[str, ...]] = get_args(Protocol)
POLICY_TYPES: Final[tuple[str, ...]] = get_args(PolicyType)
# why: API servers before 1.21 do not set this label; selectors rely on it.
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
MAX_PORT: Final = 65535
_PORT_NAME: Final = re.compile(r"^(?=.*[a-z])(?!.*--)[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
_T = TypeVar("_T")


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _fail(path: str, why: str) -> ValueError:
    return ValueError(f"{path}: {why}")


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` item: ``key`` In/NotIn ``values``, Exists, DoesNotExist."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _str(self.key, "key")
        if self.operator not in get_args(Operator):
            raise _fail("operator", f"{self.operator!r} not one of {get_args(Operator)}")
        _set(self, "values", tuple(sorted(set(self.values))))
        if (self.operator in ("In", "NotIn")) != bool(self.values):
            raise _fail(
                "values", f"must be {'' if self.values else 'non-'}empty for {self.operator}"
            )

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Return whether ``labels`` satisfy this requirement (NotIn: absent key matches)."""
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        return (self.key in labels) == (self.operator == "Exists")


@dataclass(frozen=True)
class LabelSelector:
    """A label selector; the empty selector matches everything."""

    match_labels: Mapping[str, str] = FrozenMap()
    match_expressions: tuple[Requirement, ...] = ()

    def __post_init__(self) -> None:
        _set(self, "match_labels", FrozenMap(self.match_labels))
        _set(self, "match_expressions", tuple(self.match_expressions))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Return whether ``labels`` satisfy every matchLabels item and expression."""
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            r.matches(labels) for r in self.match_expressions
        )

    @classmethod
    def from_k8s(cls, obj: Any, path: str = "selector") -> LabelSelector:
        """Parse a ``metav1.LabelSelector`` dict; ``ValueError`` names the bad field."""
        obj = _object(obj, path, {"matchLabels", "matchExpressions"})
        labels = _string_map(obj.get("matchLabels"), f"{path}.matchLabels")
        exprs = []
        for i, item in enumerate(_list(obj.get("matchExpressions"), f"{path}.matchExpressions")):
            where = f"{path}.matchExpressions[{i}]"
            item = _object(item, where, {"key", "operator", "values"})
            values = _list(item.get("values"), f"{where}.values")
            values = [_str(v, f"{where}.values[{j}]") for j, v in enumerate(values)]
            key, operator = item.get("key"), item.get("operator")
            exprs.append(_at(where, Requirement, key, operator, tuple(values)))
        return cls(labels, tuple(exprs))


@dataclass(frozen=True)
class NamespaceMeta:
    """A namespace and its labels (``kubernetes.io/metadata.name`` always present)."""

    name: str
    labels: Mapping[str, str] = FrozenMap()

    def __post_init__(self) -> None:
        _str(self.name, "name")
        _set(self, "labels", FrozenMap({**self.labels, NAMESPACE_NAME_LABEL: self.name}))

    @classmethod
    def from_k8s(cls, obj: Any) -> NamespaceMeta:
        """Parse a Namespace dict (only ``metadata.name`` and ``metadata.labels``)."""
        meta = _object(_object(obj, "namespace").get("metadata"), "metadata")
        labels = _string_map(meta.get("labels"), "metadata.labels")
        return cls(_str(meta.get("name"), "metadata.name"), labels)


@dataclass(frozen=True, slots=True)
class PodMeta:
    """A pod as policy sees it; ``ofport`` is set only for pods on this node.

    ``ports`` maps container port names to ``(protocol, number)`` for named
    ports in policies. ``ips`` may be empty (pending, finished or hostNetwork
    pods): such a pod is neither matched as a peer nor reachable.
    """

    namespace: str
    name: str
    labels: Mapping[str, str] = FrozenMap()
    ips: tuple[str, ...] = ()
    ofport: int | None = None
    ports: Mapping[str, tuple[Protocol, int]] = FrozenMap()

    def __post_init__(self) -> None:
        # why slots, interning and shared maps (flows.frozenmap): the controller
        # holds one PodMeta per pod of the cluster, 10 000 in the benchmark.
        _set(self, "namespace", sys.intern(str(_str(self.namespace, "namespace"))))
        _str(self.name, "name")
        _set(self, "labels", FrozenMap(self.labels))
        if isinstance(self.ips, str):
            raise _fail("ips", "give a list of IPv4 addresses")
        _set(self, "ips", tuple(_ipv4(f"ips[{i}]", ip) for i, ip in enumerate(self.ips)))
        low, high = schema.POD_OFPORT_MIN, schema.POD_OFPORT_MAX
        if self.ofport is not None and not low <= self.ofport <= high:
            raise _fail("ofport", f"{self.ofport} not in {low}..{high}")
        for name, (protocol, number) in self.ports.items():
            _port_name(f"ports[{name!r}]", name)
            _protocol(f"ports[{name!r}].protocol", protocol)
            _port(f"ports[{name!r}].port", number)
        _set(self, "ports", FrozenMap(self.ports))

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_k8s(cls, obj: Any, ofport: int | None = None) -> PodMeta:
        """Parse a Pod dict: labels, IPv4 pod IPs, named container ports.

        hostNetwork pods and pods in phase Succeeded/Failed get no IPs: policy
        does not apply to them and their addresses may belong to others.
        """
        pod = _object(obj, "pod")
        meta = _object(pod.get("metadata"), "metadata")
        spec = _object(pod.get("spec") or {}, "spec")
        status = _object(pod.get("status") or {}, "status")
        ips: tuple[str, ...] = ()
        if not spec.get("hostNetwork") and status.get("phase") not in ("Succeeded", "Failed"):
            ips = _pod_ips(status)
        namespace = _str(meta.get("namespace"), "metadata.namespace")
        name = _str(meta.get("name"), "metadata.name")
        labels = _string_map(meta.get("labels"), "metadata.labels")
        return cls(namespace, name, labels, ips, ofport, _named_ports(spec))


@dataclass(frozen=True)
class IPBlock:
    """``ipBlock``: ``cidr`` minus the ``except_`` CIDRs (strict subnets of it)."""

    cidr: str
    except_: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        net = _network("cidr", self.cidr)
        _set(self, "cidr", str(net))
        excepts = []
        for i, text in enumerate(self.except_):
            sub = _network(f"except[{i}]", text)
            if sub.version != net.version or not sub.subnet_of(net) or sub == net:  # type: ignore[arg-type]
                raise _fail(f"except[{i}]", f"{sub} is not a strict subnet of {net}")
            excepts.append(str(sub))
        _set(self, "except_", tuple(sorted(set(excepts))))


@dataclass(frozen=True)
class Peer:
    """One ``from``/``to`` item: selectors (namespace, pod, or both = AND) or an ipBlock.

    ``pod_selector`` alone selects pods in the policy's namespace;
    ``namespace_selector`` alone selects every pod of matching namespaces.
    """

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None

    def __post_init__(self) -> None:
        selectors = self.pod_selector is not None or self.namespace_selector is not None
        if selectors == (self.ip_block is not None):
            raise _fail("peer", "give ipBlock alone, or podSelector and/or namespaceSelector")


@dataclass(frozen=True)
class PortSpec:
    """One ``ports`` item; ``port=None`` means every port of ``protocol``.

    ``port`` is a number or a container port name (resolved against the
    destination pod); ``end_port`` makes ``port..end_port`` a range.
    """

    protocol: Protocol = "TCP"
    port: int | str | None = None
    end_port: int | None = None

    def __post_init__(self) -> None:
        _protocol("protocol", self.protocol)
        if isinstance(self.port, str):
            _port_name("port", self.port)
        elif self.port is not None:
            _port("port", self.port)
        if self.end_port is not None:
            if not isinstance(self.port, int):
                raise _fail("endPort", "needs a numeric port")
            if _port("endPort", self.end_port) < self.port:
                raise _fail("endPort", f"{self.end_port} is below port {self.port}")


@dataclass(frozen=True)
class Rule:
    """An ingress or egress rule; empty ``peers``/``ports`` mean "all"."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PortSpec, ...] = ()


@dataclass(frozen=True)
class Policy:
    """A NetworkPolicy; it selects pods of ``namespace`` matching ``pod_selector``."""

    namespace: str
    name: str
    pod_selector: LabelSelector = field(default_factory=LabelSelector)
    policy_types: tuple[PolicyType, ...] = ("Ingress",)
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()

    def __post_init__(self) -> None:
        _str(self.namespace, "namespace")
        _str(self.name, "name")
        types = tuple(self.policy_types)
        if not types or len(set(types)) != len(types) or not set(types) <= set(POLICY_TYPES):
            raise _fail("policyTypes", f"{list(types)} must be distinct Ingress/Egress")
        _set(self, "policy_types", tuple(t for t in POLICY_TYPES if t in types))

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_k8s(cls, obj: Any) -> Policy:
        """Parse a NetworkPolicy dict, applying the API defaults (see module docstring)."""
        top = _object(obj, "networkpolicy")
        meta = _object(top.get("metadata"), "metadata")
        spec = _object(top.get("spec"), "spec", {"podSelector", "policyTypes", "ingress", "egress"})
        if "podSelector" not in spec:
            raise _fail("spec.podSelector", "required (use {} for all pods)")
        ingress = _rules(spec.get("ingress"), "spec.ingress", "from")
        egress = _rules(spec.get("egress"), "spec.egress", "to")
        return cls(
            _str(meta.get("namespace"), "metadata.namespace"),
            _str(meta.get("name"), "metadata.name"),
            LabelSelector.from_k8s(spec["podSelector"], "spec.podSelector"),
            _policy_types(spec.get("policyTypes"), bool(egress)),
            ingress,
            egress,
        )


def _pod_ips(status: Mapping[str, Any]) -> tuple[str, ...]:
    found = [
        (f"status.podIPs[{i}].ip", p.get("ip")) for i, p in enumerate(status.get("podIPs") or [])
    ]
    ips = []
    for path, ip in found or [("status.podIP", status.get("podIP"))]:
        if ip is None:
            continue
        try:
            address = ipaddress.ip_address(_str(ip, path))
        except ValueError:
            raise _fail(path, f"{ip!r} is not an IP address") from None
        if address.version == 4:  # why: Sluice is IPv4-only; dual-stack IPv6 is ignored
            ips.append(str(address))
    return tuple(ips)


def _named_ports(spec: Mapping[str, Any]) -> dict[str, tuple[Protocol, int]]:
    ports: dict[str, tuple[Protocol, int]] = {}
    for c, container in enumerate(_list(spec.get("containers"), "spec.containers")):
        for p, port in enumerate(_list(container.get("ports"), f"spec.containers[{c}].ports")):
            where = f"spec.containers[{c}].ports[{p}]"
            if port.get("name"):
                name = _port_name(f"{where}.name", port["name"])
                proto = _protocol(f"{where}.protocol", port.get("protocol", "TCP"))
                ports[name] = (proto, _port(f"{where}.containerPort", port.get("containerPort")))
    return ports


def _policy_types(value: Any, has_egress: bool) -> tuple[PolicyType, ...]:
    types = _list(value, "spec.policyTypes")
    for i, kind in enumerate(types):
        if kind not in POLICY_TYPES:
            raise _fail(f"spec.policyTypes[{i}]", f"{kind!r} not one of {list(POLICY_TYPES)}")
    if len(set(types)) != len(types):
        raise _fail("spec.policyTypes", f"{types} repeats a type")
    if not types:  # why: the API default - Ingress always, Egress if egress rules exist
        return ("Ingress", "Egress") if has_egress else ("Ingress",)
    return tuple(types)


def _rules(value: Any, path: str, peers_key: str) -> tuple[Rule, ...]:
    rules = []
    for i, item in enumerate(_list(value, path)):
        where = f"{path}[{i}]"
        item = _object(item, where, {peers_key, "ports"})
        peers = tuple(
            _peer(p, f"{where}.{peers_key}[{j}]")
            for j, p in enumerate(_list(item.get(peers_key), f"{where}.{peers_key}"))
        )
        ports = tuple(
            _port_spec(p, f"{where}.ports[{j}]")
            for j, p in enumerate(_list(item.get("ports"), f"{where}.ports"))
        )
        rules.append(Rule(peers, ports))
    return tuple(rules)


def _peer(value: Any, path: str) -> Peer:
    obj = _object(value, path, {"podSelector", "namespaceSelector", "ipBlock"})
    pods, nss, block = obj.get("podSelector"), obj.get("namespaceSelector"), obj.get("ipBlock")
    pod_sel = None if pods is None else LabelSelector.from_k8s(pods, f"{path}.podSelector")
    ns_sel = None if nss is None else LabelSelector.from_k8s(nss, f"{path}.namespaceSelector")
    ip_block = None if block is None else _ip_block(block, f"{path}.ipBlock")
    try:
        return Peer(pod_sel, ns_sel, ip_block)
    except ValueError as err:
        raise ValueError(f"{path}: {str(err).split(': ', 1)[1]}") from None


def _ip_block(value: Any, path: str) -> IPBlock:
    block = _object(value, path, {"cidr", "except"})
    excepts = _list(block.get("except"), f"{path}.except")
    excepts = [_str(e, f"{path}.except[{i}]") for i, e in enumerate(excepts)]
    return _at(path, IPBlock, _str(block.get("cidr"), f"{path}.cidr"), tuple(excepts))


def _port_spec(value: Any, path: str) -> PortSpec:
    obj = _object(value, path, {"protocol", "port", "endPort"})
    return _at(path, PortSpec, obj.get("protocol", "TCP"), obj.get("port"), obj.get("endPort"))


def _at(path: str, build: Callable[..., _T], *args: Any) -> _T:
    """``build(*args)``, putting ``path.`` in front of the field its ``ValueError`` names."""
    try:
        return build(*args)
    except ValueError as err:
        raise ValueError(f"{path}.{err}") from None


def _object(value: Any, path: str, allowed: set[str] | None = None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, f"expected an object, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed) if allowed is not None else []
    if unknown:
        raise _fail(f"{path}.{unknown[0]}", "unknown field")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(path, f"expected a list, got {type(value).__name__}")
    return value


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(path, f"expected a non-empty string, got {value!r}")
    return value


def _string_map(value: Any, path: str) -> dict[str, str]:
    obj = _object(value if value is not None else {}, path)
    for key, val in obj.items():
        if not isinstance(key, str) or not key or not isinstance(val, str):
            raise _fail(f"{path}.{key}", f"expected a string value, got {val!r}")
    return dict(obj)


def _ipv4(path: str, value: Any) -> str:
    try:
        return str(ipaddress.IPv4Interface(_str(value, path)).ip)
    except ValueError:
        raise _fail(path, f"{value!r} is not an IPv4 address") from None


def _network(path: str, value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(_str(value, path), strict=False)
    except ValueError:
        raise _fail(path, f"{value!r} is not a CIDR") from None


def _protocol(path: str, value: Any) -> Protocol:
    if value not in PROTOCOLS:
        raise _fail(path, f"{value!r} not one of {list(PROTOCOLS)}")
    return value


def _port(path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PORT:
        raise _fail(path, f"{value!r} is not a port number 1..{MAX_PORT}")
    return value


def _port_name(path: str, value: Any) -> str:
    if not isinstance(value, str) or not _PORT_NAME.match(value):
        raise _fail(path, f"{value!r} is not a port name (IANA_SVC_NAME: a-z, 0-9, '-')")
    return value
