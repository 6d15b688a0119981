"""PodWatcher: a pod is programmed from its row's ofport_request before vswitchd numbers it.

The OVSDB side is a replica double (the IDL's tables as the client's ``cache()``
yields them, and the ``watch`` callback); the flow side is the real Reconciler
over a datapath double that records the bytes, so the tests check which port
numbers the installed flows name.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from bench import flowstate
from controller.metrics import Metrics
from controller.podwatch import PodWatcher, pod_from_row, pod_ofport
from controller.reconcile import Reconciler
from controller.state import NodeState
from controller.switch import Switch
from flows.ir import Output
from ovsdb import schema
from tests.unit.controller.wire_dp import WireDatapath

REQ = schema.POD_OFPORT_MIN + 7


def ids(n: int = 0) -> dict[str, str]:
    """external_ids of pod ``n`` as the CNI writes them."""
    return {
        schema.OWNER: schema.OWNER_CNI,
        schema.CONTAINER_ID: f"cid{n:04d}",
        schema.IF_NAME: "eth0",
        schema.POD_NAMESPACE: "default",
        schema.POD_NAME: f"pod-{n}",
        schema.IPS: f"10.128.0.{10 + n}/24",
        schema.MAC: f"0a:58:0a:80:00:{10 + n:02x}",
    }


def row(name: str, ofport: int | None, request: int | None, n: int = 0) -> dict[str, Any]:
    """A watch snapshot of a pod's Interface row (optional columns: value or None)."""
    return {"name": name, "ofport": ofport, "ofport_request": request, "external_ids": ids(n)}


class FakeClient:
    """The two edges PodWatcher uses: ``watch`` and the replica behind ``find_ports``."""

    def __init__(self) -> None:
        self.callback: Any = None
        self.tables = {"Interface": SimpleNamespace(rows={}), "Bridge": SimpleNamespace(rows={})}

    def watch(self, table: str, callback: Any) -> None:
        assert table == "Interface"
        self.callback = callback

    def on_resync(self, callback: Any) -> None:
        self.resynced = callback

    @contextlib.contextmanager
    def cache(self) -> Iterator[dict[str, Any]]:
        yield self.tables

    def put(self, name: str, ofport: int | None, request: int | None, n: int = 0) -> None:
        """An IDL Interface row (optional columns as 0/1-element lists)."""
        rid = uuid.uuid4()
        self.tables["Interface"].rows[rid] = SimpleNamespace(
            uuid=rid,
            name=name,
            ofport=[] if ofport is None else [ofport],
            ofport_request=[] if request is None else [request],
            external_ids=ids(n),
            mac_in_use=[],
            error=[],
        )


@pytest.fixture
def watched() -> tuple[FakeClient, NodeState, PodWatcher]:
    client, state = FakeClient(), NodeState()
    state.set_node(flowstate.node())
    watcher = PodWatcher(client, state)  # type: ignore[arg-type]
    watcher.start()
    return client, state, watcher


def ofports(state: NodeState) -> dict[str, int]:
    return {key: pod.ofport for key, pod in state.snapshot().pods.items()}


@pytest.mark.parametrize(
    ("ofport", "requested", "expected"),
    [
        (None, REQ, (REQ, False)),  # committed by the CNI, not opened yet
        (REQ, REQ, (REQ, True)),
        (REQ + 1, REQ, (REQ + 1, True)),  # vswitchd did not honour the request
        (-1, REQ, None),  # vswitchd cannot open the interface
        (None, None, None),
        (5, REQ, None),  # outside the pod range
        (None, schema.POD_OFPORT_MAX + 1, None),
    ],
)
def test_pod_ofport(ofport: int | None, requested: int | None, expected: Any) -> None:
    assert pod_ofport(ofport, requested) == expected


def test_row_with_only_a_request_yields_a_record() -> None:
    rec = pod_from_row("veth0", None, ids(), REQ)
    assert rec is not None
    assert (rec.pod.ofport, rec.assigned) == (REQ, False)
    assert pod_from_row("veth0", None, {**ids(), schema.OWNER: "other"}, REQ) is None


def test_new_row_is_programmed_before_vswitchd_numbers_it(watched: Any) -> None:
    client, state, watcher = watched
    client.callback("insert", row("veth0", None, REQ))
    assert ofports(state) == {"pod/cid0000/eth0": REQ}
    client.callback("update", row("veth0", REQ, REQ))
    assert ofports(state) == {"pod/cid0000/eth0": REQ}
    assert [r.assigned for r in watcher.records()] == [True]


def test_another_assigned_number_rerenders_and_failure_removes(watched: Any) -> None:
    client, state, _ = watched
    client.callback("insert", row("veth0", None, REQ))
    client.callback("update", row("veth0", REQ + 1, REQ))
    assert ofports(state) == {"pod/cid0000/eth0": REQ + 1}
    client.callback("update", row("veth0", -1, REQ))
    assert ofports(state) == {}
    client.callback("update", row("veth0", REQ, REQ))  # opened on a later reconfiguration
    assert ofports(state) == {"pod/cid0000/eth0": REQ}
    client.callback("delete", row("veth0", REQ, REQ))
    assert ofports(state) == {}


def test_resync_takes_requests_and_assigned_numbers(watched: Any) -> None:
    client, state, watcher = watched
    client.put("veth0", None, REQ, n=0)
    client.put("veth1", REQ + 3, REQ + 1, n=1)
    client.put("veth2", -1, REQ + 2, n=2)
    watcher.resync()
    assert ofports(state) == {"pod/cid0000/eth0": REQ, "pod/cid0001/eth0": REQ + 3}


def pod_ports(reconciler: Reconciler) -> set[Any]:
    """The pod-range port numbers the installed flows match on or output to."""
    flows = reconciler.installed_flows()
    found = {m.value for f in flows for m in f.match if m.field == "in_port"}
    found |= {a.port for f in flows for a in f.actions if isinstance(a, Output)}
    pod_range = range(schema.POD_OFPORT_MIN, schema.POD_OFPORT_MAX + 1)
    return {n for n in found if n in pod_range}


def test_flows_follow_the_number_the_row_ends_up_with(watched: Any) -> None:
    client, state, _ = watched
    switch, dp = Switch(), WireDatapath()
    dp.switch = switch
    switch.attach(dp)
    reconciler = Reconciler(state, switch, Metrics(), 1, lambda _r, _s: None)
    reconciler.full_sync()
    state.wait_dirty(0)
    client.callback("insert", row("veth0", None, REQ))
    reconciler.apply(state.snapshot(), *state.wait_dirty(0) or (set(), False))
    assert pod_ports(reconciler) == {REQ}
    client.callback("update", row("veth0", REQ + 1, REQ))
    reconciler.apply(state.snapshot(), *state.wait_dirty(0) or (set(), False))
    assert pod_ports(reconciler) == {REQ + 1}
    client.callback("delete", row("veth0", REQ + 1, REQ))
    reconciler.apply(state.snapshot(), *state.wait_dirty(0) or (set(), False))
    assert pod_ports(reconciler) == set()
