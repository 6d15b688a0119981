"""NetworkPolicy part of the flow-programming benchmark's synthetic state.

Used only when ``flows/policy.py`` exists (it is imported dynamically, so the
benchmark still runs without it). The cluster: 10 namespaces; the 110 local
pods and one pod per remote node spread over them with ``app``/``tier``
labels; per namespace two policies written as the API returns them:

* ``web``: ingress to ``tier=web`` pods from the same namespace's ``tier=web``
  pods on TCP 80 and 443, and from namespaces labelled ``team=ops`` on TCP 9090;
* ``db``: ingress to ``tier=db`` from ``tier=web`` pods on TCP 5432, egress to
  10.128.0.0/12 except 10.131.0.0/16 on UDP 53 and to ``tier=db`` on TCP 5432.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from bench import flowstate
from flows.ir import Flow

NAMESPACES = flowstate.NAMESPACES


def available() -> bool:
    """Whether the policy compiler exists in this tree."""
    return importlib.util.find_spec("flows.policy") is not None


def _labels(i: int) -> dict[str, str]:
    return {"app": f"app-{i % 11}", "tier": "web" if i % 3 else "db"}


def _pods(model: Any, n_pods: int, n_remotes: int) -> list[Any]:
    local = [
        model.PodMeta(p.namespace, p.name, _labels(i), (p.ips[0],), p.ofport)
        for i, p in enumerate(flowstate.pods(n_pods))
    ]
    remote = [
        model.PodMeta(
            f"ns-{i % NAMESPACES}", f"remote-{i}", _labels(i), (r.pod_cidrs[0][:-4] + "10",)
        )
        for i, r in enumerate(flowstate.remotes(n_remotes))
    ]
    return local + remote


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def _policy_dicts(ns: str) -> list[dict[str, Any]]:
    web = {"podSelector": {"matchLabels": {"tier": "web"}}}
    db = {"podSelector": {"matchLabels": {"tier": "db"}}}
    ops = {"namespaceSelector": {"matchLabels": {"team": "ops"}}}
    block = {"ipBlock": {"cidr": flowstate.CLUSTER, "except": ["10.131.0.0/16"]}}
    return [
        {
            "metadata": {"namespace": ns, "name": "web"},
            "spec": {
                **web,
                "ingress": [
                    {"from": [web], "ports": _tcp(80, 443)},
                    {"from": [ops], "ports": _tcp(9090)},
                ],
            },
        },
        {
            "metadata": {"namespace": ns, "name": "db"},
            "spec": {
                **db,
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [web], "ports": _tcp(5432)}],
                "egress": [
                    {"to": [block], "ports": [{"protocol": "UDP", "port": 53}]},
                    {"to": [db], "ports": _tcp(5432)},
                ],
            },
        },
    ]


def inputs(n_pods: int, n_remotes: int) -> dict[str, dict[str, Any]]:
    """The policy inputs as the controller's NodeState holds them: kind -> {key: value}.

    Local pods carry their ofport here; the controller takes it from OVSDB instead.
    """
    model = importlib.import_module("flows.policy_model")
    namespaces = [
        model.NamespaceMeta(f"ns-{i}", {"team": "ops" if i == 0 else "dev"})
        for i in range(NAMESPACES)
    ]
    policies = [
        model.Policy.from_k8s(d) for i in range(NAMESPACES) for d in _policy_dicts(f"ns-{i}")
    ]
    return {
        "policies": {p.key: p for p in policies},
        "k8s_pods": {p.key: p for p in _pods(model, n_pods, n_remotes)},
        "namespaces": {n.name: n for n in namespaces},
    }


def policy_flows(n_pods: int, n_remotes: int, round_: int = 1) -> dict[str, frozenset[Flow]]:
    """The compiled NetworkPolicy flows of the synthetic cluster (``{}`` without the compiler)."""
    if not available():
        return {}
    policy = importlib.import_module("flows.policy")
    data = inputs(n_pods, n_remotes)
    result: dict[str, frozenset[Flow]] = policy.flows_for_policies(
        data["policies"].values(),
        data["k8s_pods"].values(),
        data["namespaces"].values(),
        flowstate.node(),
        round_,
    )
    return result
