"""ovsdb.OvsdbClient and the port helpers against a real ovsdb-server + ovs-vswitchd."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import ovsdb
from ovsdb import schema
from sandbox.ovs import OvsInstance
from tests.conftest import require_root

pytestmark = pytest.mark.functional

BR = "br-int"
IdGen = Callable[[str], str]


@pytest.fixture
def client(ovs: OvsInstance) -> Iterator[ovsdb.OvsdbClient]:
    """An OvsdbClient on the private instance, closed at teardown."""
    c = ovsdb.OvsdbClient(ovs.db_remote, timeout=10.0)
    yield c
    c.close()


@pytest.fixture
def bridge(client: ovsdb.OvsdbClient) -> str:
    """br-int with the userspace datapath (removed with the instance)."""
    require_root()
    ovsdb.ensure_bridge(client, BR, "netdev")
    return BR


def _links() -> set[str]:
    return {p.name for p in Path("/sys/class/net").iterdir()}


def _pod_ids(container: str, if_name: str = "eth0", **extra: str) -> dict[str, str]:
    return {schema.CONTAINER_ID: container, schema.IF_NAME: if_name, **extra}


def _add(client: ovsdb.OvsdbClient, name: str, container: str, may_exist: bool = True) -> int:
    """A pod port of type internal (a TAP made by OVS, so no veth is needed)."""
    return ovsdb.add_pod_port(
        client, BR, name, _pod_ids(container), iface_type="internal", may_exist=may_exist
    )


def test_ensure_bridge_sets_columns_idempotently(
    ovs: OvsInstance, client: ovsdb.OvsdbClient, bridge: str
) -> None:
    target = "tcp:127.0.0.1:6653"

    def controller_row() -> str:
        return ovs.vsctl("get", "Bridge", bridge, "controller").strip()

    ovsdb.ensure_bridge(client, bridge, "netdev", controller=target, other_config={"a": "1"})
    first = controller_row()
    ovsdb.ensure_bridge(client, bridge, "netdev", controller=target, other_config={"a": "1"})
    ovsdb.ensure_bridge(client, bridge, "netdev", controller=target, other_config={"b": "2"})
    assert controller_row() == first  # unchanged target: the Controller row is kept
    assert ovs.vsctl("get", "Controller", first.strip("[]"), "target").strip() == f'"{target}"'
    assert ovs.vsctl("get", "Bridge", bridge, "fail_mode").strip() == "secure"
    assert ovs.vsctl("get", "Bridge", bridge, "protocols").strip() == "[OpenFlow13]"
    assert ovs.vsctl("get", "Bridge", bridge, "other_config").strip() == '{a="1", b="2"}'
    assert ovsdb.bridge_exists(client, bridge)
    assert not ovsdb.bridge_exists(client, "br-nope")
    assert ovsdb.bridge_datapath_type(client, bridge) == "netdev"
    assert "netdev" in ovsdb.datapath_types(client)
    assert ovsdb.userspace_tso_enabled(client) is False


def test_internal_port_gets_requested_ofport_and_mac(
    client: ovsdb.OvsdbClient, bridge: str, ifname: IdGen, ovs: OvsInstance
) -> None:
    gw = ifname("gw")
    mac = "02:00:00:00:00:02"
    assert ovsdb.ensure_internal_port(client, bridge, gw, schema.GATEWAY_OFPORT, mac=mac) == 2
    assert ovsdb.ensure_internal_port(client, bridge, gw, schema.GATEWAY_OFPORT, mac=mac) == 2
    assert gw in _links()
    assert Path(f"/sys/class/net/{gw}/address").read_text().strip() == mac
    assert f" 2({gw}):" in ovs.ofctl("-O", "OpenFlow13", "show", bridge)
    assert ovsdb.del_port(client, gw) is True
    assert gw not in _links()


def test_add_pod_port_records_ids_and_takes_lowest_free_high_ofport(
    client: ovsdb.OvsdbClient, bridge: str, ifname: IdGen, ovs: OvsInstance
) -> None:
    p1, p2, p3 = ifname("a"), ifname("b"), ifname("c")
    assert _add(client, p1, "c1") == schema.POD_OFPORT_MIN
    assert _add(client, p2, "c2") == schema.POD_OFPORT_MIN + 1
    assert (
        ovsdb.add_pod_port(
            client, bridge, p3, _pod_ids("c3"), (40000, 40010), iface_type="internal"
        )
        == 40000
    )
    for table in ("Interface", "Port"):
        ids = ovs.vsctl("get", table, p2, "external_ids").strip()
        assert f"{schema.CONTAINER_ID}=c2" in ids and f"{schema.OWNER}={schema.OWNER_CNI}" in ids
    # A freed number is reused by the next port.
    ovsdb.del_port(client, p1)
    assert _add(client, p1, "c4") == schema.POD_OFPORT_MIN
    for name in (p1, p2, p3):
        ovsdb.del_port(client, name)


def test_add_pod_port_is_idempotent_for_same_container(
    client: ovsdb.OvsdbClient, bridge: str, ifname: IdGen, ovs: OvsInstance
) -> None:
    name = ifname("p")
    first = _add(client, name, "c1")
    assert _add(client, name, "c1") == first
    assert ovs.vsctl("list-ports", bridge).split() == [name]
    with pytest.raises(ovsdb.PortConflict):
        _add(client, name, "c1", may_exist=False)
    ovsdb.del_port(client, name)


def test_add_pod_port_conflicting_owner_raises_and_keeps_port(
    client: ovsdb.OvsdbClient, bridge: str, ifname: IdGen, ovs: OvsInstance
) -> None:
    name = ifname("p")
    ofport = _add(client, name, "c1")
    with pytest.raises(ovsdb.PortConflict) as err:
        _add(client, name, "someone-else")
    assert err.value.port == name and "'c1'" in err.value.reason
    assert (
        ovsdb.find_pod_port(client, "c1", "eth0")
        == ovsdb.find_ports(client, **{schema.CONTAINER_ID: "c1"})[0]
    )
    assert ovs.vsctl("get", "Interface", name, "ofport").strip() == str(ofport)
    ovsdb.del_port(client, name)


def test_port_vswitchd_cannot_open_raises_and_leaves_no_row(
    client: ovsdb.OvsdbClient, bridge: str, ifname: IdGen, ovs: OvsInstance
) -> None:
    name = ifname("x")  # type "" (system) on a link that does not exist
    with pytest.raises(ovsdb.PortAddFailed) as err:
        ovsdb.add_pod_port(client, bridge, name, _pod_ids("c1"))
    assert err.value.port == name
    assert "No such device" in err.value.reason
    assert name not in ovs.vsctl("--columns=name", "list", "Interface")
    assert ovs.vsctl("list-ports", bridge).split() == []
    assert ovsdb.find_pod_port(client, "c1", "eth0") is None


def test_missing_bridge_and_exhausted_range_are_typed(
    client: ovsdb.OvsdbClient, bridge: str, ifname: IdGen
) -> None:
    with pytest.raises(ovsdb.BridgeMissing, match="br-nope"):
        ovsdb.add_pod_port(client, "br-nope", ifname("m"), _pod_ids("c0"))
    with pytest.raises(ovsdb.BridgeMissing):
        ovsdb.bridge_datapath_type(client, "br-nope")
    names = [ifname("r1"), ifname("r2")]
    for i, name in enumerate(names):
        ovsdb.add_pod_port(
            client, bridge, name, _pod_ids(f"c{i}"), (41000, 41001), iface_type="internal"
        )
    with pytest.raises(ovsdb.OfportRangeExhausted, match=r"\[41000, 41001\]"):
        ovsdb.add_pod_port(client, bridge, ifname("r3"), _pod_ids("c9"), (41000, 41001))
    for name in names:
        ovsdb.del_port(client, name)


def test_concurrent_add_pod_port_gives_distinct_ofports(
    client: ovsdb.OvsdbClient, bridge: str, ifname: IdGen, ovs: OvsInstance
) -> None:
    names = [ifname(f"{t}{i:02d}") for t in range(8) for i in range(25)]

    def add(name: str) -> int:
        return _add(client, name, f"ctr-{name}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        ofports = list(pool.map(add, names))
    try:
        assert len(set(ofports)) == len(names) == 200
        assert all(schema.POD_OFPORT_MIN <= p <= schema.POD_OFPORT_MAX for p in ofports)
        assert sorted(ovs.vsctl("list-ports", bridge).split()) == sorted(names)
        assert {
            r.name: r.ofport for r in ovsdb.find_ports(client, **{schema.OWNER: schema.OWNER_CNI})
        } == dict(zip(names, ofports, strict=True))
    finally:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda n: ovsdb.del_port(client, n), names))
    assert not set(names) & _links()


def test_two_clients_racing_never_share_an_ofport(
    client: ovsdb.OvsdbClient, bridge: str, ifname: IdGen, ovs: OvsInstance
) -> None:
    other = ovsdb.OvsdbClient(ovs.db_remote, timeout=10.0)
    names = [ifname(f"k{i:02d}") for i in range(20)]

    def add(i: int) -> int:
        # why: two IDLs race in ovsdb-server itself; Bridge.ports verification
        # must turn a collision into a retry with a fresh choice.
        return _add((client, other)[i % 2], names[i], names[i])

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            ofports = list(pool.map(add, range(len(names))))
        assert len(set(ofports)) == len(names)
    finally:
        for name in names:
            ovsdb.del_port(client, name)
        other.close()


def test_del_port_if_exists(client: ovsdb.OvsdbClient, bridge: str, ifname: IdGen) -> None:
    name = ifname("d")
    _add(client, name, "c1")
    assert name in _links()
    assert ovsdb.del_port(client, name) is True
    assert name not in _links()
    assert ovsdb.del_port(client, name) is False
    with pytest.raises(ovsdb.PortMissing, match=name):
        ovsdb.del_port(client, name, if_exists=False)


def test_find_pod_port_only_sees_cni_owned_rows(
    client: ovsdb.OvsdbClient, bridge: str, ifname: IdGen
) -> None:
    mine, theirs = ifname("m"), ifname("o")
    ofport = _add(client, mine, "c1")
    ovsdb.add_pod_port(
        client, bridge, theirs, _pod_ids("c2", **{schema.OWNER: "other"}), iface_type="internal"
    )
    try:
        rec = ovsdb.find_pod_port(client, "c1", "eth0")
        assert rec is not None
        assert (rec.name, rec.ofport, rec.bridge) == (mine, ofport, bridge)
        assert rec.external_ids[schema.OWNER] == schema.OWNER_CNI
        assert rec.mac_in_use and len(rec.mac_in_use) == 17
        assert ovsdb.find_pod_port(client, "c1", "eth1") is None
        assert ovsdb.find_pod_port(client, "c2", "eth0") is None
    finally:
        ovsdb.del_port(client, mine)
        ovsdb.del_port(client, theirs)


def test_find_pod_port_follows_external_ids_changes_made_elsewhere(
    ovs: OvsInstance, client: ovsdb.OvsdbClient, bridge: str, ifname: IdGen
) -> None:
    """The lookup is indexed by (container id, ifname); the index must follow rows
    that another OVSDB client relabels, disowns or deletes."""
    name = ifname("x")
    _add(client, name, "c1")
    try:
        ovs.vsctl("set", "Interface", name, f"external_ids:{schema.CONTAINER_ID}=c2")
        assert client.wait_vswitchd(timeout=10.0)
        assert ovsdb.find_pod_port(client, "c1", "eth0") is None
        rec = ovsdb.find_pod_port(client, "c2", "eth0")
        assert rec is not None and rec.name == name
        ovs.vsctl("set", "Interface", name, f"external_ids:{schema.OWNER}=other")
        assert client.wait_vswitchd(timeout=10.0)
        assert ovsdb.find_pod_port(client, "c2", "eth0") is None
        ovs.vsctl("set", "Interface", name, f"external_ids:{schema.OWNER}={schema.OWNER_CNI}")
        assert client.wait_vswitchd(timeout=10.0)
        assert ovsdb.find_pod_port(client, "c2", "eth0") is not None
    finally:
        ovsdb.del_port(client, name)
    assert ovsdb.find_pod_port(client, "c2", "eth0") is None


def test_bridge_external_ids_merge(client: ovsdb.OvsdbClient, bridge: str) -> None:
    ovsdb.set_bridge_external_ids(client, bridge, {schema.FLOW_ROUND: "1", "x": "y"})
    ovsdb.set_bridge_external_ids(client, bridge, {schema.FLOW_ROUND: "2"})
    assert ovsdb.get_bridge_external_ids(client, bridge) == {schema.FLOW_ROUND: "2", "x": "y"}


def test_watch_sees_interface_create_and_delete(
    client: ovsdb.OvsdbClient, bridge: str, ifname: IdGen
) -> None:
    name = ifname("w")
    events: queue.Queue[tuple[float, str, dict[str, object], threading.Thread]] = queue.Queue()

    def on_row(event: str, row: dict[str, object]) -> None:
        events.put((time.monotonic(), event, row, threading.current_thread()))

    client.watch("Interface", on_row)

    def wait_for(event: str, since: float) -> dict[str, object]:
        while True:
            at, ev, row, thread = events.get(timeout=5)
            if ev == event and row["name"] == name:
                assert at - since < 1.0, f"{event} arrived {at - since:.3f} s after the call"
                assert thread is not threading.main_thread()  # the IDL thread
                return row

    start = time.monotonic()
    ofport = _add(client, name, "c1")
    created = wait_for("create", start)
    assert created["external_ids"] == {**_pod_ids("c1"), schema.OWNER: schema.OWNER_CNI}
    start = time.monotonic()
    ovsdb.del_port(client, name)
    deleted = wait_for("delete", start)
    assert deleted["ofport"] == ofport


def test_unavailable_is_raised_promptly_without_server(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(stale))  # bound, never listening: connect() is refused
    sock.close()
    for remote in (f"unix:{tmp_path / 'none.sock'}", f"unix:{stale}"):
        start = time.monotonic()
        with pytest.raises(ovsdb.OvsdbUnavailable) as err:
            ovsdb.OvsdbClient(remote, timeout=1.0)
        assert time.monotonic() - start < 1.5
        assert err.value.remote == remote


def test_unavailable_after_server_stops(
    ovs: OvsInstance, client: ovsdb.OvsdbClient, bridge: str
) -> None:
    ovs.stop()
    start = time.monotonic()
    with pytest.raises(ovsdb.OvsdbUnavailable):
        ovsdb.set_bridge_external_ids(client, bridge, {"a": "b"}, timeout=1.0)
    assert time.monotonic() - start < 3.0
    assert not client.connected


def test_client_reconnects_after_server_restart(
    ovs: OvsInstance, client: ovsdb.OvsdbClient, bridge: str
) -> None:
    events: list[tuple[str, object]] = []
    client.watch("Bridge", lambda ev, row: events.append((ev, row["name"])))
    ovs.stop()
    ovs.start()  # same conf.db: the bridge is still there
    deadline = time.monotonic() + 10
    while not client.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    ovsdb.set_bridge_external_ids(client, bridge, {"after": "restart"})
    assert ovsdb.get_bridge_external_ids(client, bridge) == {"after": "restart"}
    # The full resync after a reconnect replays existing rows as "create".
    assert ("create", bridge) in events
