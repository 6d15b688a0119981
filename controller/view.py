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
    "UnknownTable",
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
    mode: Literal["overlay", "routing", "underlay"]
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
    ofport: OfPort | None = Field(description="null until OVS has assigned one")
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
