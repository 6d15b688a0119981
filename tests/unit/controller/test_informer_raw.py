"""Raw informers: paged lists and watch streams as JSON, plain dicts to the handler.

The fake API answers the way the client does with ``_preload_content=False``:
an object with ``data`` (a list page) or ``stream()`` (watch lines, cut at
arbitrary byte boundaries), and ``release_conn()``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from controller.informer import Gone, Informer
from controller.policywatch import PolicyInputHandler
from controller.state import NodeState


class Response:
    """What the client returns without preloading: a body read whole or streamed."""

    def __init__(self, body: bytes, chunk: int = 7) -> None:
        self.data = body
        self.chunk = chunk
        self.released = False

    def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
        for i in range(0, len(self.data), self.chunk):
            yield self.data[i : i + self.chunk]

    def release_conn(self) -> None:
        self.released = True


def pod(name: str, rv: str, ns: str = "a", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "labels": labels},
        "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 80}]}]},
        "status": {"podIP": f"10.0.0.{rv}"},
    }


class FakeApi:
    """Serves pages of a list (``limit``/``_continue``) and one watch stream per call."""

    def __init__(self, items: list[dict[str, Any]], version: str, watch_lines: list[Any]) -> None:
        self.items, self.version, self.watch_lines = items, version, watch_lines
        self.calls: list[dict[str, Any]] = []
        self.responses: list[Response] = []

    def __call__(self, **kwargs: Any) -> Response:
        self.calls.append(kwargs)
        assert kwargs["_preload_content"] is False
        if kwargs["watch"]:
            text = "".join(json.dumps(e) + "\n" for e in self.watch_lines)
            resp = Response(text.encode())
        else:
            start = int(kwargs.get("_continue") or 0)
            end = start + kwargs["limit"]
            meta = {"resourceVersion": self.version, "continue": str(end)}
            if end >= len(self.items):
                del meta["continue"]
            resp = Response(json.dumps({"metadata": meta, "items": self.items[start:end]}).encode())
        self.responses.append(resp)
        return resp


class Recorder:
    """A raw handler that records what it is given."""

    raw = True

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def __call__(self, kind: str, obj: Any) -> None:
        self.seen.append((kind, obj))


def test_relist_pages_through_the_list_and_keeps_only_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("controller.informer.PAGE_SIZE", 2)
    api = FakeApi([pod(f"p{i}", str(i)) for i in range(5)], "40", [])
    rec = Recorder()
    informer = Informer("pods", api, rec)
    assert informer.relist() == "40"
    assert [c.get("_continue") for c in api.calls] == [None, "2", "4"]
    assert [(k, o["metadata"]["name"]) for k, o in rec.seen] == [
        ("ADDED", f"p{i}") for i in range(5)
    ]
    assert informer.store == {f"a/p{i}": str(i) for i in range(5)}
    assert all(r.released for r in api.responses)

    api.items = [pod("p1", "41"), pod("p9", "42")]
    rec.seen.clear()
    informer.relist()
    kinds = sorted((k, o["metadata"]["name"]) for k, o in rec.seen)
    assert kinds == [("ADDED", "p9"), ("DELETED", "p0"), ("DELETED", "p2"), ("DELETED", "p3"),
                     ("DELETED", "p4"), ("MODIFIED", "p1")]  # fmt: skip
    deleted = next(o for k, o in rec.seen if k == "DELETED")
    assert deleted["metadata"]["namespace"] == "a"


def test_watch_reads_json_lines_across_chunks() -> None:
    events = [
        {"type": "ADDED", "object": pod("x", "51")},
        {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "60"}}},
        {"type": "MODIFIED", "object": pod("x", "61", tier="db")},
        {"type": "DELETED", "object": pod("x", "62")},
    ]
    api = FakeApi([], "50", events)
    rec = Recorder()
    informer = Informer("pods", api, rec)
    assert informer.watch_once("50") == "62"
    assert api.calls[0]["resource_version"] == "50" and api.calls[0]["allow_watch_bookmarks"]
    assert [k for k, _ in rec.seen] == ["ADDED", "MODIFIED", "DELETED"]
    assert rec.seen[1][1]["metadata"]["labels"] == {"tier": "db"}
    assert informer.store == {} and api.responses[0].released


def test_watch_error_410_or_a_gone_status_means_relist() -> None:
    expired = {"type": "ERROR", "object": {"kind": "Status", "code": 410}}
    informer = Informer("pods", FakeApi([], "1", [expired]), Recorder())
    with pytest.raises(Gone):
        informer.watch_once("1")

    def gone(**_: Any) -> Any:
        raise ApiException(status=410)

    with pytest.raises(Gone):
        Informer("pods", gone, Recorder()).watch_once("1")


def test_policy_inputs_from_raw_dicts_reach_the_state() -> None:
    state = NodeState()
    api = FakeApi([pod("p1", "3", app="web")], "9", [])
    informer = Informer("k8s_pods", api, PolicyInputHandler("k8s_pods", state, ApiClient()))
    informer.relist()
    meta = state.snapshot().k8s_pods["a/p1"]
    assert meta.labels == {"app": "web"} and meta.ips == ("10.0.0.3",)
    assert meta.ports["http"] == ("TCP", 80)
    api.items = []
    informer.relist()
    assert state.snapshot().k8s_pods == {}


def test_a_bad_policy_keeps_its_last_good_version() -> None:
    state = NodeState()
    handler = PolicyInputHandler("policies", state, ApiClient())
    good = {"metadata": {"name": "p", "namespace": "a"}, "spec": {"podSelector": {}}}
    handler("ADDED", good)
    handler("MODIFIED", {"metadata": {"name": "p", "namespace": "a"}, "spec": {}})
    assert state.snapshot().policies["a/p"].name == "p"
    handler("DELETED", {"metadata": {"name": "p", "namespace": "a"}})
    assert state.snapshot().policies == {}
