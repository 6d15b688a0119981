"""The OVSDB pieces of the CNI's fast path against a real OVS: watch snapshots built
from changed columns, the pod port committed on its own connection, vswitchd waits."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import pytest

import ovsdb
from cni.ports import OvsdbPortStore
from ovsdb import podport, schema
from ovsdb.connection import row_snapshot
from sandbox.ovs import OvsInstance
from tests.functional.conftest import BR

pytestmark = pytest.mark.functional


def test_every_event_carries_the_whole_current_row(
    client: ovsdb.OvsdbClient, ifname: Callable[[str], str]
) -> None:
    """Snapshots of updates are built from the changed columns only; they must still
    equal a full copy of the row (the callback runs on the IDL thread, so the
    replica can be read there)."""
    mismatches: list[tuple[str, str]] = []
    events: list[tuple[str, dict[str, Any]]] = []
    names = {ifname("a"), ifname("b")}

    def on_row(event: str, snap: dict[str, Any]) -> None:
        if snap["name"] not in names:
            return
        events.append((event, snap))
        row = client._idl.tables["Interface"].rows.get(snap["_uuid"])
        if event != "delete" and (row is None or row_snapshot(row) != snap):
            mismatches.append((event, snap["name"]))

    client.watch("Interface", on_row)
    try:
        for i, name in enumerate(sorted(names)):
            ids = {schema.CONTAINER_ID: f"c{i}", schema.IF_NAME: "eth0"}
            ofport = ovsdb.add_pod_port(client, BR, name, ids, iface_type="internal")
            assert ofport >= schema.POD_OFPORT_MIN
        ovsdb.set_bridge_external_ids(client, BR, {"unrelated": "change"})
        for name in names:
            ovsdb.del_port(client, name)
    finally:
        client.unwatch("Interface", on_row)
    updates = [e for e, _ in events if e == "update"]
    assert updates, "ovs-vswitchd fills in ofport & co. after the insert"
    assert mismatches == []
    deleted = {s["name"]: s for e, s in events if e == "delete"}
    assert set(deleted) == names and all(
        s["ofport"] >= schema.POD_OFPORT_MIN for s in deleted.values()
    )


def test_callbacks_get_their_own_copy(
    client: ovsdb.OvsdbClient, ifname: Callable[[str], str]
) -> None:
    seen: list[dict[str, Any]] = []
    name = ifname("m")

    def spoil(event: str, snap: dict[str, Any]) -> None:
        if snap["name"] == name:
            snap["name"] = "spoiled"
            snap["external_ids"] = {}

    def record(event: str, snap: dict[str, Any]) -> None:
        if snap["name"] == name:
            seen.append(snap)

    client.watch("Interface", spoil)
    client.watch("Interface", record)
    try:
        ids = {schema.CONTAINER_ID: "c", schema.IF_NAME: "eth0"}
        ovsdb.add_pod_port(client, BR, name, ids, iface_type="internal")
        ovsdb.del_port(client, name)
    finally:
        client.unwatch("Interface", spoil)
        client.unwatch("Interface", record)
    assert seen and all(s["external_ids"].get(schema.CONTAINER_ID) == "c" for s in seen)


def test_commit_pod_port_returns_before_vswitchd_and_wait_catches_up(
    client: ovsdb.OvsdbClient, ifname: Callable[[str], str]
) -> None:
    name = ifname("n")
    ids = {schema.CONTAINER_ID: "c", schema.IF_NAME: "eth0"}
    ovsdb.ports.commit_pod_port(client, BR, name, ids)  # no waiting for ovs-vswitchd
    try:
        assert client.wait_vswitchd(timeout=10.0)
        port = ovsdb.find_pod_port(client, "c", "eth0")
        # A veth that does not exist cannot be opened: ofport -1 and the reason.
        assert port is not None and port.ofport == -1 and port.error
    finally:
        ovsdb.del_port(client, name)


def _ids(container: str) -> dict[str, str]:
    return {schema.OWNER: schema.OWNER_CNI, schema.CONTAINER_ID: container, schema.IF_NAME: "eth0"}


def test_pod_port_may_exist_conflicts_and_missing_bridge(
    client: ovsdb.OvsdbClient, ifname: Callable[[str], str]
) -> None:
    assert client.can_transact
    name, span = ifname("p"), (41000, 41010)
    podport.commit_pod_port(client, BR, name, _ids("c1"), span, 10.0)
    try:
        assert client.wait_vswitchd(10.0)  # the replica now shows the port
        podport.commit_pod_port(client, BR, name, _ids("c1"), span, 10.0)  # kept
        with pytest.raises(ovsdb.PortConflict, match="container 'c1'"):
            podport.commit_pod_port(client, BR, name, _ids("c2"), span, 10.0)
        with pytest.raises(ovsdb.BridgeMissing):
            podport.commit_pod_port(
                client, "br-nope", ifname("q"), _ids("c3"), (41000, 41010), 10.0
            )
        port = ovsdb.find_pod_port(client, "c1", "eth0")
        assert port is not None and port.external_ids == _ids("c1")
        assert [p.name for p in ovsdb.find_ports(client, **{schema.OWNER: schema.OWNER_CNI})] == [
            name
        ]
    finally:
        ovsdb.del_port(client, name)


def test_pod_port_skips_a_number_taken_behind_its_back(
    ovs: OvsInstance, client: ovsdb.OvsdbClient, ifname: Callable[[str], str]
) -> None:
    """Another OVSDB client requested 41000 a moment ago; the replica may not show it
    yet, so the transaction's own check must catch it and the next number be used."""
    theirs, mine = ifname("t"), ifname("m")
    ovs.vsctl("add-port", BR, theirs, "--", "set", "Interface", theirs, "type=internal",
              "ofport_request=41000")  # fmt: skip
    try:
        ops = podport._ops(BR, mine, _ids("c"), 41000)
        failed = ovsdb.rpc.first_error(client.transact(ops, 10.0))
        assert failed is not None and failed[0] == 2  # the ofport check
        podport.commit_pod_port(client, BR, mine, _ids("c"), (41000, 41010), 10.0)
        assert client.wait_vswitchd(10.0)
        port = ovsdb.find_pod_port(client, "c", "eth0")
        assert port is not None and port.name == mine
        requested = ovs.vsctl("get", "Interface", mine, "ofport_request").strip()
        assert requested == "41001"
    finally:
        ovsdb.del_port(client, mine)
        ovsdb.del_port(client, theirs)


def test_concurrent_pod_ports_get_distinct_numbers(
    client: ovsdb.OvsdbClient, ifname: Callable[[str], str]
) -> None:
    names = [ifname(f"c{i}") for i in range(12)]

    def add(i: int) -> None:
        podport.commit_pod_port(client, BR, names[i], _ids(f"k{i}"), (42000, 42100), 10.0)

    try:
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(add, range(len(names))))
        assert client.wait_vswitchd(10.0)
        ports = ovsdb.find_ports(client, **{schema.OWNER: schema.OWNER_CNI})
        assert sorted(p.name for p in ports) == sorted(names)
        with client.cache() as tables:
            requested = [
                r.ofport_request[0] for r in tables["Interface"].rows.values() if r.name in names
            ]
        assert len(set(requested)) == len(names) and min(requested) >= 42000
    finally:
        for name in names:
            ovsdb.del_port(client, name)


def test_port_store_del_does_not_wait_but_readding_the_name_does(
    ovs: OvsInstance, client: ovsdb.OvsdbClient, ifname: Callable[[str], str]
) -> None:
    """The CNI's DEL returns once OVSDB dropped the port, even with ovs-vswitchd
    frozen; an ADD of that same name then waits for vswitchd to apply the removal
    (vswitchd keys ports by name), while an ADD of another name does not."""
    store = OvsdbPortStore(client)
    name, other = ifname("r"), ifname("o")
    vswitchd = ovs.pids["ovs-vswitchd"]
    try:
        ovsdb.add_pod_port(client, BR, name, _ids("c1"), iface_type="internal")
        os.kill(vswitchd, signal.SIGSTOP)
        with ThreadPoolExecutor(2) as pool:
            pool.submit(store.del_port, name).result(timeout=5.0)
            same = pool.submit(store.add_pod_port, BR, name, _ids("c1"), 10.0)
            pool.submit(store.add_pod_port, BR, other, _ids("c2"), 10.0).result(timeout=5.0)
            done, _ = wait([same], timeout=1.0)
            assert not done, "re-adding a just-removed name must wait for ovs-vswitchd"
            os.kill(vswitchd, signal.SIGCONT)
            same.result(timeout=10.0)
    finally:
        os.kill(vswitchd, signal.SIGCONT)
        for n in (name, other):
            store.del_port(n)
        assert client.wait_vswitchd(timeout=10.0)  # the internal port's TAP is gone
    assert ovsdb.find_pod_port(client, "c1", "eth0") is None


def test_port_store_deletes_a_port_the_replica_does_not_show_yet(
    ovs: OvsInstance, client: ovsdb.OvsdbClient, ifname: Callable[[str], str]
) -> None:
    """ADD commits on the plain connection; a DEL right after it must remove the
    port even while the IDL replica has not applied the insert (held here by
    keeping the replica's lock, which the IDL thread needs to apply updates)."""
    store = OvsdbPortStore(client)
    name = ifname("d")
    with client.cache():
        store.add_pod_port(BR, name, _ids("c1"), 10.0)
        store.del_port(name)
    assert client.wait_vswitchd(timeout=10.0)
    assert ovsdb.find_pod_port(client, "c1", "eth0") is None
    assert name not in ovs.vsctl("list-ports", BR).split()
