"""Informer store semantics: relist diffs, event handling, 410 → relist."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from controller.informer import Gone, Informer
from controller.k8s import NodeHandler, pod_cidrs
from controller.state import NodeState


def obj(name: str, rv: str, **spec: Any) -> Any:
    meta = SimpleNamespace(name=name, namespace=None, resource_version=rv, annotations=None)
    return SimpleNamespace(metadata=meta, spec=SimpleNamespace(**spec), status=None)


def listing(rv: str, *items: Any) -> Any:
    return SimpleNamespace(items=list(items), metadata=SimpleNamespace(resource_version=rv))


def make(lists: list[Any]) -> tuple[Informer, list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []
    it = iter(lists)
    informer = Informer("t", lambda **_: next(it), lambda k, o: seen.append((k, o.metadata.name)))
    return informer, seen


def test_relist_emits_adds_updates_and_deletes() -> None:
    informer, seen = make([listing("5", obj("a", "1"), obj("b", "2")), listing("9", obj("b", "7"))])
    assert informer.relist() == "5"
    assert seen == [("ADDED", "a"), ("ADDED", "b")] and informer.synced.is_set()
    seen.clear()
    assert informer.relist() == "9"
    assert seen == [("DELETED", "a"), ("MODIFIED", "b")]
    assert set(informer.store) == {"/b"}


def test_watch_events_update_store_and_version() -> None:
    informer, seen = make([])
    assert informer._handle({"type": "ADDED", "object": obj("a", "10")}, "5") == "10"
    assert informer._handle({"type": "MODIFIED", "object": obj("a", "11")}, "10") == "11"
    bookmark = {"metadata": {"resourceVersion": "12"}}  # the client delivers a plain dict
    event = {"type": "BOOKMARK", "object": bookmark, "raw_object": bookmark}
    assert informer._handle(event, "11") == "12"
    assert informer._handle({"type": "DELETED", "object": obj("a", "13")}, "12") == "13"
    assert seen == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    assert informer.store == {}


def test_expired_version_means_relist() -> None:
    informer, _ = make([])
    with pytest.raises(Gone):
        informer._handle({"type": "ERROR", "object": None, "raw_object": {"code": 410}}, "5")
    with pytest.raises(RuntimeError):
        informer._handle({"type": "ERROR", "object": None, "raw_object": {"code": 500}}, "5")


def node(name: str, cidr: str | None, ip: str | None) -> dict[str, Any]:
    """A Node as the API server's JSON (the handler is raw)."""
    spec = {"podCIDR": cidr, "podCIDRs": [cidr]} if cidr else {}
    addrs = [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]
    meta = {"name": name, "resourceVersion": "1"}
    return {"metadata": meta, "spec": spec, "status": {"addresses": addrs if ip else []}}


def test_node_handler_tracks_self_and_remotes() -> None:
    state = NodeState()
    mine: list[tuple[tuple[str, ...], str | None]] = []
    handler = NodeHandler("me", state, lambda c, ip: mine.append((c, ip)))
    handler("ADDED", node("me", None, "198.51.100.11"))
    assert mine == []  # never invent a podCIDR: wait for the controller-manager
    handler("MODIFIED", node("me", "10.244.1.0/24", "198.51.100.11"))
    assert mine == [(("10.244.1.0/24",), "198.51.100.11")]
    handler("ADDED", node("n2", "10.244.2.0/24", "198.51.100.12"))
    handler("ADDED", node("n3", None, "198.51.100.13"))
    assert set(state.snapshot().remotes) == {"node/n2"}
    handler("DELETED", {"metadata": {"name": "n2", "namespace": None}})  # a relist's tombstone
    assert state.snapshot().remotes == {}


def test_node_handler_reads_the_uplink_mac_annotation() -> None:
    state = NodeState()
    handler = NodeHandler("me", state, lambda c, ip: None)
    peer = node("n2", "10.244.2.0/24", "198.51.100.12")
    peer["metadata"]["annotations"] = {"sluice.io/uplink-mac": "02:00:00:00:00:AA"}
    handler("ADDED", peer)
    assert state.snapshot().remotes["node/n2"].uplink_mac == "02:00:00:00:00:aa"
    assert NodeHandler.raw  # the informer hands it JSON, no client models


def test_pod_cidrs_ignores_ipv6() -> None:
    n = node("x", "10.244.0.0/24", None)
    n["spec"]["podCIDRs"] = ["10.244.0.0/24", "fd00::/64"]
    assert pod_cidrs(n) == ("10.244.0.0/24",)
    assert pod_cidrs({"spec": {"podCIDR": "10.244.3.0/24"}}) == ("10.244.3.0/24",)
