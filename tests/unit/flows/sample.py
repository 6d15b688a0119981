"""A small cluster state shared by the flow tests, plus a fake-switch harness."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from flows.desired import desired_flows
from flows.diff import diff
from flows.fake_table import FakeTable
from flows.ir import Flow
from flows.model import NodeConfig, PodPort, RemoteNode

GW_MAC = "02:00:00:00:01:01"
NODE = NodeConfig(
    name="node-a",
    node_ip="192.168.10.11",
    pod_cidrs=("10.244.1.0/24",),
    gateway_ip="10.244.1.1",
    gateway_mac=GW_MAC,
    cluster_cidr="10.244.0.0/16",
    service_cidr="10.96.0.0/12",
)
ROUTED_NODE = replace(NODE, mode="routing", uplink_mac="02:00:c0:a8:0a:0b")
POD_A = PodPort(32768, "02:00:0a:f4:01:02", ("10.244.1.2/24",), "default", "web", "c0ffee01")
POD_B = PodPort(32769, "02:00:0a:f4:01:03", ("10.244.1.3/24",), "default", "db", "c0ffee02")
REMOTE = RemoteNode("node-b", "192.168.10.12", ("10.244.2.0/24",), uplink_mac="02:00:c0:a8:0a:0c")
REMOTE_POD_IP = "10.244.2.7"


def all_flows(desired: Mapping[str, Iterable[Flow]]) -> list[Flow]:
    """Flatten ``{key: flows}``."""
    return [flow for flows in desired.values() for flow in flows]


def install(table: FakeTable, batch: Iterable[Flow]) -> None:
    """Add ``batch`` twice and check the second time changed nothing (faucet-style)."""
    flows = list(batch)
    table.add_all(flows)
    before = table.flows()
    table.add_all(flows)
    assert table.flows() == before, "re-applying a batch changed the table"


def switch(
    node: NodeConfig = NODE,
    pods: Iterable[PodPort] = (POD_A, POD_B),
    remotes: Iterable[RemoteNode] = (REMOTE,),
) -> FakeTable:
    """Return a fake br-int with the node's desired flows installed batch by batch."""
    table = FakeTable()
    desired = desired_flows(node, pods, remotes)
    for flows in desired.values():
        install(table, flows)
    assert diff(desired, {"all": table.flows()}).empty
    return table
