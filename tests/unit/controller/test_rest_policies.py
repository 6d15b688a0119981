"""``/v1/policies`` and ``/v1/policies/explain``: real HTTP against RestServer over the
controller's View of the policy_sample cluster; every answer is checked against the
app's OpenAPI document (``Api`` of test_rest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controller.metrics import Metrics
from tests.unit.controller.policy_sample import make_state, make_view
from tests.unit.controller.test_rest import Api, FakeView


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    api = Api(make_view(make_state()), Metrics())  # type: ignore[arg-type]
    api.server.start()
    try:
        yield api
    finally:
        api.server.stop()


def test_policies(api: Api) -> None:
    reply = api.get("/v1/policies")
    assert reply.status == 200
    body = {f"{p['namespace']}/{p['name']}": p for p in reply.json()}
    assert list(body) == ["x/a-egress", "x/ignored", "x/web-from-b", "y/deny-all"]
    web = body["x/web-from-b"]
    assert web["policy_types"] == ["Ingress"]
    assert [(p["name"], p["local"]) for p in web["selected_pods"]] == [
        ("a", True),
        ("a2", False),
        ("pending", False),
    ]
    (rule,) = web["ingress"]
    assert rule["key"] == "policy/x/web-from-b/ingress/0"
    assert rule["peer_cidrs"] == ["10.244.1.3/32"]  # x/b, the only app=b pod
    assert [p["name"] for p in rule["peers"][0]["pods"]] == ["b"]
    named, numbered = rule["ports"]
    assert named["resolved"] == [{"pod": "x/a", "port": 8080}, {"pod": "x/a2", "port": 9090}]
    assert (numbered["port"], numbered["end_port"]) == (80, 90)
    (egress,) = body["x/a-egress"]["egress"]
    assert egress["peers"][1]["ip_block"] == {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}
    assert body["x/ignored"]["ignored"] == ["1 egress rule(s): Egress is not in policyTypes"]


def test_policies_namespace_filter(api: Api) -> None:
    assert [p["name"] for p in api.get("/v1/policies?namespace=y").json()] == ["deny-all"]
    assert api.get("/v1/policies?namespace=nothing-here").json() == []


def test_explain(api: Api) -> None:
    reply = api.get("/v1/policies/explain?namespace=x&pod=a")
    assert reply.status == 200
    body = reply.json()
    assert body["pod"] == {"namespace": "x", "name": "a", "ips": ["10.244.1.2"], "local": True}
    assert body["named_ports"] == {"web": "TCP/8080"}
    assert (body["ingress"]["isolated"], body["egress"]["isolated"]) == (True, True)
    assert [p["name"] for p in body["ingress"]["policies"]] == ["web-from-b"]
    (rule,) = body["ingress"]["policies"][0]["rules"]
    assert rule["ports"][0]["resolved"] == [{"pod": "x/a", "port": 8080}]
    assert [p["name"] for p in body["egress"]["policies"]] == ["a-egress"]


def test_explain_default_deny_and_unselected(api: Api) -> None:
    d = api.get("/v1/policies/explain?namespace=y&pod=d").json()
    assert d["ingress"] == {
        "isolated": True,
        "policies": [{"namespace": "y", "name": "deny-all", "rules": []}],
    }
    assert d["egress"] == {"isolated": False, "policies": []}
    e = api.get("/v1/policies/explain?pod=e&namespace=z").json()
    assert (e["ingress"]["isolated"], e["egress"]["isolated"]) == (False, False)


@pytest.mark.parametrize(
    ("query", "status", "parameter"),
    [
        ("?namespace=nowhere&pod=a", 404, "namespace"),
        ("?namespace=x&pod=gone", 404, "pod"),
        ("?pod=a", 400, "namespace"),
        ("?namespace=x", 400, "pod"),
        ("", 400, "namespace"),
        ("?namespace=X_bad&pod=a", 400, "namespace"),
        ("?namespace=x&pod=Not..valid", 400, "pod"),
        ("?namespace=x&pod=a&verbose=1", 400, "verbose"),
        ("?namespace=x&namespace=y&pod=a", 400, "namespace"),
    ],
)
def test_explain_errors_name_the_parameter(
    api: Api, query: str, status: int, parameter: str
) -> None:
    reply = api.get(f"/v1/policies/explain{query}")
    assert reply.status == status
    detail = reply.json()["detail"]
    assert detail["parameter"] == parameter
    assert parameter in detail["message"]


def test_policies_rejects_a_bad_namespace(api: Api) -> None:
    reply = api.get("/v1/policies?namespace=Bad_NS")
    assert (reply.status, reply.json()["detail"]["parameter"]) == (400, "namespace")


def test_openapi_documents_the_policy_routes(api: Api) -> None:
    paths = api.doc()["paths"]
    assert {"/v1/policies", "/v1/policies/explain"} <= set(paths)
    explain = paths["/v1/policies/explain"]["get"]
    assert {"200", "400", "404"} <= set(explain["responses"])
    assert [p["name"] for p in explain["parameters"] if p["required"]] == ["namespace", "pod"]


def test_a_view_without_policies_serves_no_policy_routes() -> None:
    plain = Api(FakeView(), Metrics())
    plain.server.start()
    try:
        assert plain.raw_get("/v1/policies").status == 404
        assert "/v1/policies" not in plain.doc()["paths"]
    finally:
        plain.server.stop()
