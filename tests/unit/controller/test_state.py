"""NodeState: this node's configuration and the change it signals."""

from __future__ import annotations

from controller.state import NodeState
from flows.model import NodeConfig


def config(mac: str) -> NodeConfig:
    return NodeConfig("n1", "198.51.100.11", ("10.244.1.0/24",), "10.244.1.1", mac, "10.244.0.0/16")


def test_node_is_none_until_set_then_the_latest_config() -> None:
    state = NodeState()
    assert state.node() is None
    state.set_node(config("02:00:00:00:00:01"))
    assert state.wait_dirty(0) == (set(), True)
    state.set_node(config("02:00:00:00:00:01"))  # equal: nothing to recompute
    assert state.wait_dirty(0) is None
    state.set_node(config("02:00:00:00:00:02"))
    node = state.node()
    assert node is not None and node.gateway_mac == "02:00:00:00:00:02"
    assert state.wait_dirty(0) == (set(), True)
