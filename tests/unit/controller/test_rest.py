"""REST API tests: real HTTP against RestServer on a free loopback port.

Every response is checked against the app's own OpenAPI document (status
declared, media type declared, body valid). ``FakeView`` below is a test double
of ``ControllerView`` for the REST layer's tests only.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.metrics import Metrics
from controller.rest import RestServer, create_app
from controller.view import (
    ControllerView,
    FlowInfo,
    GatewayInfo,
    NodeInfo,
    PodInfo,
    UnknownPod,
    UnknownTable,
)
from tests.unit.controller.openapi_check import response_schema, validate

TABLES = ["Classifier", "SpoofGuard", "L3Forwarding", "Output"]
NODE = NodeInfo(
    name="node-a",
    mode="overlay",
    tunnel_type="vxlan",
    pod_cidrs=("10.244.1.0/24",),
    gateway=GatewayInfo(name="gw0", ip="10.244.1.1", mac="0a:58:0a:f4:01:01", ofport=2),
    node_ip="192.168.0.10",
    datapath_type="system",
    bridge="br-int",
    flow_round=3,
)
PODS = [
    PodInfo(
        namespace=ns,
        name=name,
        uid=f"uid-{name}",
        container_id=f"cid-{name}",
        ifname="eth0",
        ofport=ofport,
        port_name=f"veth{ofport}",
        mac=f"0a:58:0a:f4:01:{ofport:02x}",
        ips=(f"10.244.1.{ofport}",),
    )
    for ns, name, ofport in [("default", "web", 10), ("kube-system", "dns", 11)]
]


def _flow(table: str, priority: int, cookie: int, category: str, rest: str) -> FlowInfo:
    text = f"cookie={cookie:#x}, table={table}, priority={priority}{rest}"
    return FlowInfo(table=table, priority=priority, cookie=cookie, category=category, text=text)


WEB, DNS = 0x303000000000A, 0x303000000000B  # round 3, category pod, ofport 10 / 11
TO_SPOOF, TO_L3 = " actions=goto_table:SpoofGuard", " actions=goto_table:L3Forwarding"
# (pod ref or None, flow)
FLOWS = [
    (None, _flow("Classifier", 0, 0x3010000000000, "pipeline", " actions=drop")),
    ("default/web", _flow("Classifier", 200, WEB, "pod", ",in_port=10" + TO_SPOOF)),
    ("default/web", _flow("SpoofGuard", 200, WEB, "pod", ",ip,in_port=10" + TO_L3)),
    ("kube-system/dns", _flow("Classifier", 200, DNS, "pod", ",in_port=11" + TO_SPOOF)),
]


@dataclass
class FakeView:
    """Test double: an in-memory ``ControllerView`` with switchable health."""

    alive: bool = True
    ready: tuple[bool, list[str]] = (True, [])
    pod_list: list[PodInfo] = field(default_factory=lambda: list(PODS))

    def node(self) -> NodeInfo:
        return NODE

    def pods(self) -> list[PodInfo]:
        return list(self.pod_list)

    def flows(self, table: str | None, pod: str | None) -> list[FlowInfo]:
        if table is not None and table not in TABLES:
            raise UnknownTable(table)
        if pod is not None and pod not in {f"{p.namespace}/{p.name}" for p in self.pod_list}:
            raise UnknownPod(pod)
        return [
            f
            for ref, f in FLOWS
            if (table is None or f.table == table) and (pod is None or ref == pod)
        ]

    def tables(self) -> list[str]:
        return list(TABLES)

    def health(self) -> bool:
        return self.alive

    def readiness(self) -> tuple[bool, list[str]]:
        return self.ready


@dataclass
class Reply:
    """One HTTP answer, already checked against the OpenAPI document."""

    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Api:
    """A started server plus a GET helper that validates every answer."""

    def __init__(self, view: FakeView, metrics: Metrics) -> None:
        self.view = view
        self.metrics = metrics
        self.app = create_app(view, metrics)
        self.server = RestServer(self.app, port=0)
        self._doc: dict[str, Any] | None = None

    def raw_get(self, path_and_query: str) -> Reply:
        url = f"http://127.0.0.1:{self.server.port}{path_and_query}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return Reply(resp.status, resp.headers["Content-Type"], resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return Reply(err.code, err.headers["Content-Type"], err.read())

    def doc(self) -> dict[str, Any]:
        if self._doc is None:
            self._doc = self.raw_get("/openapi.json").json()
        return self._doc

    def get(self, path_and_query: str) -> Reply:
        reply = self.raw_get(path_and_query)
        path = path_and_query.split("?")[0]
        schema = response_schema(self.doc(), path, reply.status, reply.content_type)
        body = reply.json() if reply.content_type == "application/json" else reply.body.decode()
        validate(self.doc(), schema, body, f"GET {path_and_query} {reply.status}")
        return reply


@pytest.fixture
def api() -> Iterator[Api]:
    api = Api(FakeView(), Metrics())
    api.server.start()
    try:
        yield api
    finally:
        api.server.stop()


def test_fake_view_implements_the_protocol() -> None:
    assert isinstance(FakeView(), ControllerView)


def test_healthz(api: Api) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    api.view.alive = False
    reply = api.get("/healthz")
    assert (reply.status, reply.json()) == (503, {"status": "unhealthy"})


def test_healthz_is_503_when_the_view_raises(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> bool:
        raise RuntimeError("state lock poisoned")

    monkeypatch.setattr(api.view, "health", boom)
    assert api.get("/healthz").status == 503


def test_readyz(api: Api) -> None:
    reply = api.get("/readyz")
    assert (reply.status, reply.json()) == (200, {"status": "ready", "reasons": []})
    api.view.ready = (False, ["switch not connected", "podCIDR unknown"])
    reply = api.get("/readyz")
    assert reply.status == 503
    assert reply.json()["reasons"] == ["switch not connected", "podCIDR unknown"]


def test_node(api: Api) -> None:
    body = api.get("/v1/node").json()
    assert body["name"] == "node-a"
    gateway = {"name": "gw0", "ip": "10.244.1.1", "mac": "0a:58:0a:f4:01:01", "ofport": 2}
    assert body["gateway"] == gateway
    assert body["pod_cidrs"] == ["10.244.1.0/24"]
    assert body["flow_round"] == 3


def test_pods_and_namespace_filter(api: Api) -> None:
    assert [p["name"] for p in api.get("/v1/pods").json()] == ["web", "dns"]
    only = api.get("/v1/pods?namespace=kube-system").json()
    assert [(p["namespace"], p["name"], p["ips"]) for p in only] == [
        ("kube-system", "dns", ["10.244.1.11"])
    ]
    assert api.get("/v1/pods?namespace=nothing-here").json() == []


def test_tables(api: Api) -> None:
    assert api.get("/v1/tables").json() == TABLES


def test_flows_unfiltered_and_filtered(api: Api) -> None:
    everything = api.get("/v1/flows").json()
    assert len(everything) == len(FLOWS)
    assert everything[1]["cookie"] == "0x303000000000a"
    by_table = api.get("/v1/flows?table=SpoofGuard").json()
    assert [f["table"] for f in by_table] == ["SpoofGuard"]
    by_pod = api.get("/v1/flows?pod=kube-system/dns").json()
    assert [f["text"] for f in by_pod] == [FLOWS[3][1].text]
    both = api.get("/v1/flows?table=Classifier&pod=default/web").json()
    assert [f["priority"] for f in both] == [200]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("/v1/flows?pod=web", "pod"),
        ("/v1/flows?pod=default/", "pod"),
        ("/v1/flows?pod=/web", "pod"),
        ("/v1/flows?pod=Default/web", "pod"),
        ("/v1/flows?pod=a/b/c", "pod"),
        ("/v1/flows?table=", "table"),
        ("/v1/flows?table=Output&table=Classifier", "table"),
        ("/v1/flows?tabel=Output", "tabel"),
        ("/v1/pods?namespace=Not_A_Namespace", "namespace"),
        ("/v1/pods?ns=default", "ns"),
        ("/v1/node?verbose=1", "verbose"),
        ("/healthz?x=1", "x"),
        ("/metrics?name[]=sluice_pods", "name[]"),
    ],
)
def test_400_names_the_parameter(api: Api, query: str, parameter: str) -> None:
    reply = api.get(query)
    assert reply.status == 400
    detail = reply.json()["detail"]
    assert detail["parameter"] == parameter
    assert parameter in detail["message"]


def test_404_names_the_parameter(api: Api) -> None:
    reply = api.get("/v1/flows?table=Foo")
    assert (reply.status, reply.json()) == (
        404,
        {"detail": {"parameter": "table", "message": "unknown table 'Foo'"}},
    )
    reply = api.get("/v1/flows?table=Output&pod=default/gone")
    assert (reply.status, reply.json()["detail"]["parameter"]) == (404, "pod")
    assert "default/gone" in reply.json()["detail"]["message"]


def test_metrics_after_observations(api: Api) -> None:
    api.metrics.set_flows_per_table({"Classifier": 4, "Output": 2})
    api.metrics.observe_flow_mod(0.003)
    api.metrics.count_flow_mods(add=5, delete=1)
    api.metrics.set_switch_connected(True)
    reply = api.get("/metrics")
    assert reply.content_type.startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.body.decode())
        for s in family.samples
    }
    assert samples[("sluice_flows", (("table", "Classifier"),))] == 4
    assert samples[("sluice_flow_mod_seconds_count", ())] == 1
    assert samples[("sluice_flow_mods_total", (("op", "add"),))] == 5
    assert samples[("sluice_switch_connected", ())] == 1


def test_openapi_lists_every_path(api: Api) -> None:
    doc = api.doc()
    assert doc["info"]["title"] == "sluice-controller"
    assert doc["info"]["version"]
    routes = api.app.routes
    served = {getattr(r, "path", "") for r in routes if getattr(r, "include_in_schema", False)}
    expected = {"/healthz", "/readyz", "/v1/node", "/v1/pods", "/v1/tables", "/v1/flows"}
    assert set(doc["paths"]) == served == expected | {"/metrics"}
    for path, item in doc["paths"].items():
        assert "422" not in item["get"]["responses"], path


def test_schema_check_is_not_vacuous(api: Api) -> None:
    schema = response_schema(api.doc(), "/v1/flows", 200, "application/json")
    good = api.get("/v1/flows").json()
    validate(api.doc(), schema, good)
    with pytest.raises(AssertionError, match="cookie"):
        validate(api.doc(), schema, [{**good[0], "cookie": 12}])
    with pytest.raises(AssertionError, match="'text' is a required property"):
        validate(api.doc(), schema, [{k: v for k, v in good[0].items() if k != "text"}])
    with pytest.raises(AssertionError, match="status 418 not declared"):
        response_schema(api.doc(), "/v1/node", 418, "application/json")


def test_rest_server_real_get_and_clean_stop() -> None:
    before = set(threading.enumerate())
    server = RestServer(create_app(FakeView(), Metrics()), host="127.0.0.1", port=0)
    server.start()
    port = server.port
    assert port > 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        assert (resp.status, json.load(resp)) == (200, {"status": "ok"})
    server.stop()
    # why: other tests' daemon threads may come and go meanwhile; only the REST
    # server's own threads (its runner and asyncio's executor) must be gone.
    leaked = {
        t
        for t in set(threading.enumerate()) - before
        if t.name.startswith(("sluice-rest", "asyncio"))
    }
    assert leaked == set()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_rest_server_bind_error_surfaces_in_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = RestServer(create_app(FakeView(), Metrics()), port=taken.getsockname()[1])
        with pytest.raises(OSError):
            server.start()
