"""PodWatcher against a real OVS: ports vswitchd cannot open, and a reconnect that
misses a deletion (ovsdb-server restarted, the row removed while it was down)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

import ovsdb
from controller.podwatch import PodWatcher
from controller.state import NodeState
from ovsdb import ports, schema
from sandbox.ovs import OvsInstance
from tests.functional.conftest import BR

pytestmark = pytest.mark.functional


def pod_ids(n: int) -> dict[str, str]:
    """external_ids of pod ``n`` as the CNI writes them."""
    return {
        schema.CONTAINER_ID: f"cid{n}",
        schema.IF_NAME: "eth0",
        schema.POD_NAMESPACE: "default",
        schema.POD_NAME: f"pod-{n}",
        schema.IPS: f"10.128.0.{10 + n}/24",
        schema.MAC: f"0a:58:0a:80:00:{10 + n:02x}",
    }


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def pod_names(state: NodeState) -> set[str]:
    return {p.name for p in state.snapshot().pods.values()}


def test_a_port_vswitchd_cannot_open_loses_its_pod(client: ovsdb.OvsdbClient, ifname: Any) -> None:
    state = NodeState()
    PodWatcher(client, state).start()
    # why no veth: ovs-vswitchd cannot open the device and reports ofport -1.
    ports.commit_pod_port(client, BR, ifname("gone"), pod_ids(1))
    ovsdb.add_pod_port(client, BR, ifname("tap"), pod_ids(2), iface_type="internal")
    assert client.wait_vswitchd(10.0)
    wait_for(lambda: pod_names(state) == {"pod-2"}, "only the port that opened")
    for name in (ifname("gone"), ifname("tap")):
        ovsdb.del_port(client, name)


def test_reconnect_forgets_a_row_deleted_while_away(
    ovs: OvsInstance, client: ovsdb.OvsdbClient, ifname: Any
) -> None:
    state = NodeState()
    PodWatcher(client, state).start()
    for n in (1, 2):
        ovsdb.add_pod_port(client, BR, ifname(f"p{n}"), pod_ids(n), iface_type="internal")
    wait_for(lambda: pod_names(state) == {"pod-1", "pod-2"}, "both pods")
    port = ovs.vsctl("--bare", "--columns=_uuid", "find", "Port", f"name={ifname('p1')}").strip()
    ovs.stop()
    delete = {
        "op": "mutate",
        "table": "Bridge",
        "where": [["name", "==", BR]],
        "mutations": [["ports", "delete", ["uuid", port]]],
    }
    ovs.run(
        "ovsdb-tool", "transact", str(ovs.workdir / "conf.db"), json.dumps(["Open_vSwitch", delete])
    )
    ovs.start()  # a new server: no monitor to resume, the client gets a fresh dump
    wait_for(lambda: pod_names(state) == {"pod-2"}, "the resync after the reconnect")
    ovsdb.del_port(client, ifname("p2"))
