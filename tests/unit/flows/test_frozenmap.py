"""FrozenMap sharing and the compact PodMeta record."""

from __future__ import annotations

import gc
import pickle

import pytest

from flows import frozenmap
from flows.frozenmap import FrozenMap
from flows.policy_model import PodMeta


def test_equal_maps_are_one_object_and_behave_as_mappings() -> None:
    a = FrozenMap({"tier": "web", "app": "shop"})
    b = FrozenMap([("app", "shop"), ("tier", "web")])
    assert a is b and FrozenMap(a) is a
    assert a == {"app": "shop", "tier": "web"} and list(a) == ["app", "tier"]
    assert hash(a) == hash(FrozenMap({"app": "shop", "tier": "web"}))
    assert a != FrozenMap({"app": "shop"}) and a.get("x") is None
    assert pickle.loads(pickle.dumps(a)) is a


def test_maps_nobody_holds_are_forgotten() -> None:
    held = FrozenMap({"only": "once"})
    assert (("only", "once"),) in frozenmap._LIVE
    del held
    gc.collect()
    assert (("only", "once"),) not in frozenmap._LIVE


def test_unhashable_values_make_a_working_unshared_map() -> None:
    a = FrozenMap({"k": ["v"]})
    assert a["k"] == ["v"] and a is not FrozenMap({"k": ["v"]})
    assert a == FrozenMap({"k": ["v"]})
    with pytest.raises(TypeError):
        hash(a)


def pod_json(name: str, tier: str) -> dict[str, object]:
    # json.loads makes new string objects per pod, as the informer's pages do
    return {
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": "web", "tier": tier}},
        "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}]},
    }


def test_pod_meta_keeps_only_what_policy_reads_and_shares_maps() -> None:
    a = PodMeta.from_k8s(pod_json("a", "db"), ofport=32770)
    b = PodMeta.from_k8s(pod_json("b", "db"))
    assert (a.namespace, a.name, a.ips, a.ofport) == ("shop", "a", ("10.244.1.5",), 32770)
    assert dict(a.labels) == {"app": "web", "tier": "db"}
    assert dict(a.ports) == {"http": ("TCP", 8080)}
    assert a.labels is b.labels and a.ports is b.ports and a.namespace is b.namespace
    assert not hasattr(a, "__dict__")  # slots: no per-pod attribute dict
    assert PodMeta(a.namespace, a.name, a.labels, a.ips, a.ofport, a.ports) == a
    assert pickle.loads(pickle.dumps(a)) == a
