"""The whole desired flow state of a node, keyed by object for ``flows.diff``."""

from __future__ import annotations

from collections.abc import Iterable

from flows.ir import Flow
from flows.model import NodeConfig, PodPort, RemoteNode
from flows.node import gateway_flows, pipeline_flows
from flows.pod import flows_for_pod
from flows.remote import flows_for_remote_node

PIPELINE_KEY = "pipeline"
GATEWAY_KEY = "gateway"


def desired_flows(
    node: NodeConfig,
    pods: Iterable[PodPort] = (),
    remotes: Iterable[RemoteNode] = (),
    *,
    round_: int = 1,
) -> dict[str, frozenset[Flow]]:
    """Return every flow the node needs, as ``{object key: flows}``.

    Keys: ``"pipeline"``, ``"gateway"``, ``PodPort.key``, ``RemoteNode.key``.
    Raises ``ValueError`` if two objects share a key. Pure.
    """
    desired = {
        PIPELINE_KEY: frozenset(pipeline_flows(node, round_=round_)),
        GATEWAY_KEY: frozenset(gateway_flows(node, round_=round_)),
    }
    for key, flows in _objects(node, pods, remotes, round_):
        if key in desired:
            raise ValueError(f"duplicate flow key {key!r}")
        desired[key] = frozenset(flows)
    return desired


def _objects(
    node: NodeConfig, pods: Iterable[PodPort], remotes: Iterable[RemoteNode], round_: int
) -> Iterable[tuple[str, list[Flow]]]:
    for pod in pods:
        yield pod.key, flows_for_pod(pod, node, round_=round_)
    for remote in remotes:
        yield remote.key, flows_for_remote_node(remote, node, round_=round_)
