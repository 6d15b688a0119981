"""What the REST API may read from the controller: a Protocol and its value types.

``controller/rest.py`` only ever talks to a ``ControllerView``; the controller
implements it from its in-memory state (``controller/state.py``, the switch's
installed-flow cache, the flow renderer). The value types are frozen pydantic
models so that the REST layer returns them as they are and the OpenAPI document
describes them field by field.

Contract for implementers:

- Methods are called from the REST server's worker threads, concurrently with
  the controller's own updates. Return snapshots (new lists of frozen models),
  never live containers, and take whatever lock the state needs.
- Methods must be quick and must not block on the switch or on OVSDB; answer
  from memory ("what we last installed / last saw").
- ``flows()`` raises ``UnknownTable`` / ``UnknownPod`` for a filter that names
  nothing; the REST layer turns them into 404s naming the query parameter.
  Syntax (``pod`` is "namespace/name") is checked by the REST layer first.
- A view that also implements ``PolicyView`` gets the NetworkPolicy routes
  (``/v1/policies``); ``pod_policies()`` raises ``UnknownNamespace`` /
  ``UnknownPod`` the same way.
"""

from __future__ import annotations

from typing import Annotated, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

__all__ = [
    "ControllerView",
    "FlowInfo",
    "GatewayInfo",
    "NodeInfo",
    "PodInfo",
    "UnknownFilter",
    "UnknownPod",
    "UnknownNamespace",
    "UnknownTable",
    "AppliedPolicy",
    "DirectionInfo",
    "IPBlockInfo",
    "NamedPortInfo",
    "PeerInfo",
    "PodPolicies",
    "PodRef",
    "PolicyInfo",
    "PolicyView",
    "PortInfo",
    "RuleInfo",
]


class UnknownFilter(LookupError):
    """A filter value names nothing; ``parameter`` is the query parameter's name."""

    parameter: str = ""


class UnknownTable(UnknownFilter):
    """``flows(table=...)`` named a table that is not in the pipeline."""

    parameter = "table"

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown table {name!r}")
        self.name = name


class UnknownPod(UnknownFilter):
    """``flows(pod=...)`` named a pod ("namespace/name") this node does not host."""

    parameter = "pod"

    def __init__(self, ref: str) -> None:
        super().__init__(f"unknown pod {ref!r}")
        self.ref = ref


class UnknownNamespace(UnknownFilter):
    """A namespace the controller has seen neither as a Namespace nor in a pod."""

    parameter = "namespace"

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown namespace {name!r}")
        self.name = name


class _Frozen(BaseModel):
    # why: extra="forbid" makes a typo in the implementation's keyword fail at
    # construction instead of silently dropping a field from the API.
    model_config = ConfigDict(frozen=True, extra="forbid")


# why: implementers pass the cookie as the int they have; JSON shows it as hex,
# the way ovs-ofctl prints it, because 64-bit ints lose precision in JavaScript.
HexCookie = Annotated[
    int,
    Field(ge=0, lt=1 << 64, description="flow cookie, rendered as lowercase hex"),
    PlainSerializer(lambda c: f"{c:#x}", return_type=str, when_used="json"),
    WithJsonSchema(
        {"type": "string", "pattern": "^0x[0-9a-f]+$", "description": "flow cookie in hex"},
        mode="serialization",
    ),
]
OfPort = Annotated[int, Field(ge=1, le=0xFFFFFF00, description="OpenFlow port number (ofport)")]


class GatewayInfo(_Frozen):
    """The node's gateway port on the bridge (gw0)."""

    name: str = Field(description="OVS port / host interface name, e.g. gw0")
    ip: str = Field(description="gateway IP address (first address of the podCIDR)")
    mac: str = Field(description="gateway MAC address, lowercase colon-separated")
    ofport: OfPort | None = Field(description="null until OVS has assigned one")


class NodeInfo(_Frozen):
    """This node as the controller sees it."""

    name: str = Field(description="Kubernetes node name")
    mode: Literal["overlay", "routing", "underlay", "hybrid"]
    tunnel_type: Literal["vxlan", "geneve"] = Field(description="used in overlay mode")
    pod_cidrs: tuple[str, ...] = Field(description="empty while the podCIDR is unknown")
    gateway: GatewayInfo | None = Field(description="null until the gateway is set up")
    node_ip: str | None = Field(description="the node's transport IP; null if unknown")
    datapath_type: Literal["system", "netdev"] = Field(description="the resolved type")
    bridge: str = Field(description="integration bridge name, e.g. br-int")
    flow_round: int | None = Field(
        ge=1, le=65535, description="cookie round of installed flows; null before the first"
    )


class PodInfo(_Frozen):
    """One pod interface attached to the bridge."""

    namespace: str
    name: str
    uid: str = Field(description="pod UID; empty if the runtime did not pass it")
    container_id: str = Field(description="CNI_CONTAINERID of the sandbox")
    ifname: str = Field(description="interface name inside the pod, e.g. eth0")
    ofport: OfPort | None = Field(
        description="the requested number (ofport_request) until ovs-vswitchd assigns one"
    )
    port_name: str = Field(description="OVS port / host-side veth name")
    mac: str = Field(description="pod interface MAC, lowercase colon-separated")
    ips: tuple[str, ...] = Field(description="pod IP addresses, without prefix length")


class FlowInfo(_Frozen):
    """One installed flow."""

    table: str = Field(description="pipeline table name")
    priority: int = Field(ge=0, le=65535)
    cookie: HexCookie
    category: str = Field(description="cookie category, lowercase: pipeline, gateway, pod, ...")
    text: str = Field(description="ovs-ofctl style rendering with table names")


IpProtocol = Literal["TCP", "UDP", "SCTP"]


class PodRef(_Frozen):
    """A pod as a policy selects it (any node of the cluster)."""

    namespace: str
    name: str
    ips: tuple[str, ...] = Field(description="IPv4 addresses; empty = matched by no peer")
    local: bool = Field(description="its interface is on this node")


class IPBlockInfo(_Frozen):
    """An ``ipBlock`` peer: ``cidr`` minus the ``except`` CIDRs."""

    model_config = ConfigDict(populate_by_name=True)
    cidr: str
    except_: tuple[str, ...] = Field(alias="except")


class PeerInfo(_Frozen):
    """One ``from``/``to`` item and the pods its selectors select now."""

    pod_selector: str | None = Field(description='kubectl syntax; "" selects all; null = absent')
    namespace_selector: str | None = Field(description="as pod_selector")
    ip_block: IPBlockInfo | None
    pods: tuple[PodRef, ...] = Field(description="selected pods with addresses; [] for ipBlock")


class NamedPortInfo(_Frozen):
    """What a named port resolves to on one destination pod."""

    pod: str = Field(description="namespace/name")
    port: int = Field(ge=1, le=65535)


class PortInfo(_Frozen):
    """One ``ports`` item; ``port`` null = every port of ``protocol``."""

    protocol: IpProtocol
    port: int | str | None = Field(description="number, container port name, or null")
    end_port: int | None = Field(description="inclusive end of a port range")
    resolved: tuple[NamedPortInfo, ...] | None = Field(
        description="for a named port: the destination pods that have it; null otherwise"
    )


class RuleInfo(_Frozen):
    """One ingress/egress rule and what it allows."""

    index: int = Field(ge=0, description="position in spec.ingress / spec.egress")
    key: str = Field(description="flow key, policy/<ns>/<name>/<direction>/<index>")
    installed_flows: int = Field(ge=0, description="flows of this rule installed on this node")
    peers: tuple[PeerInfo, ...] | None = Field(description="null = every peer")
    peer_cidrs: tuple[str, ...] | None = Field(
        description="every peer address the rule matches, merged; null = any, [] = none"
    )
    ports: tuple[PortInfo, ...] | None = Field(description="null = every protocol and port")


class PolicyInfo(_Frozen):
    """A NetworkPolicy as this node's controller compiles it."""

    namespace: str
    name: str
    pod_selector: str = Field(description='kubectl syntax; "" selects every pod')
    policy_types: tuple[Literal["Ingress", "Egress"], ...]
    selected_pods: tuple[PodRef, ...] = Field(description="pods it applies to (any node)")
    ingress: tuple[RuleInfo, ...] = Field(description="empty unless Ingress is a policy type")
    egress: tuple[RuleInfo, ...] = Field(description="empty unless Egress is a policy type")
    ignored: tuple[str, ...] = Field(description="rules dropped because of policyTypes")


class AppliedPolicy(_Frozen):
    """A policy selecting the explained pod, with its rules of one direction."""

    namespace: str
    name: str
    rules: tuple[RuleInfo, ...] = Field(description="[] = this policy allows nothing")


class DirectionInfo(_Frozen):
    """One direction of one pod: isolated (default deny) or not, and by which policies."""

    isolated: bool = Field(description="some policy selects the pod for this direction")
    policies: tuple[AppliedPolicy, ...]


class PodPolicies(_Frozen):
    """Which policies select one pod, per direction, and what they allow."""

    pod: PodRef
    labels: dict[str, str]
    named_ports: dict[str, str] = Field(description='container port names, e.g. "TCP/8080"')
    isolation_flows: int = Field(ge=0, description="default-deny flows installed for it here")
    ingress: DirectionInfo
    egress: DirectionInfo


@runtime_checkable
class PolicyView(Protocol):
    """Read-only view of the NetworkPolicies a node's controller knows."""

    def policies(self, namespace: str | None) -> list[PolicyInfo]:
        """Every policy (or only ``namespace``'s), sorted by namespace and name."""
        ...

    def pod_policies(self, namespace: str, name: str) -> PodPolicies:
        """The policies selecting one pod; ``UnknownNamespace`` / ``UnknownPod`` if unknown."""
        ...


@runtime_checkable
class ControllerView(Protocol):
    """Read-only view of one node's controller, as the REST API needs it."""

    def node(self) -> NodeInfo:
        """This node's identity, addressing and bridge facts."""
        ...

    def pods(self) -> list[PodInfo]:
        """Every pod interface on this node, in a stable order."""
        ...

    def flows(self, table: str | None, pod: str | None) -> list[FlowInfo]:
        """Installed flows, optionally only one table's and/or one pod's.

        ``pod`` is "namespace/name". Raises ``UnknownTable(name)`` if the table is
        not in the pipeline and ``UnknownPod(ref)`` if the pod is not on this node.
        Flows are in pipeline order, then by descending priority.
        """
        ...

    def tables(self) -> list[str]:
        """Pipeline table names in packet order."""
        ...

    def health(self) -> bool:
        """True while the process and all its worker threads are running."""
        ...

    def readiness(self) -> tuple[bool, list[str]]:
        """(ready, reasons it is not): e.g. "switch not connected", "podCIDR unknown"."""
        ...
