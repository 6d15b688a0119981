"""A small cluster of NetworkPolicy inputs fed through the controller's own handlers.

API objects are written as the API server's JSON, turned into kubernetes client
models, and given to ``PolicyInputHandler`` exactly as the informers do; local
pod ports go into ``NodeState`` as the OVSDB watcher does. ``make_view`` returns
the controller's real ``View`` with the compiled policy flows "installed".
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client import ApiClient

from controller.metrics import Metrics
from controller.policywatch import PolicyInputHandler
from controller.reconcile import Reconciler, policy_flows
from controller.state import NodeState
from controller.switch import Switch
from controller.viewimpl import NodeFacts, View
from flows.model import NodeConfig, PodPort

NAMESPACES = {"x": {"team": "a"}, "y": {"team": "b"}, "z": {}}
# (namespace, name, labels, ip or None, ofport if local, named ports)
PODS: list[tuple[str, str, dict[str, str], str | None, int | None, dict[str, Any]]] = [
    ("x", "a", {"app": "a"}, "10.244.1.2", 32768, {"web": ("TCP", 8080)}),
    ("x", "a2", {"app": "a"}, "10.244.2.2", None, {"web": ("TCP", 9090)}),
    ("x", "b", {"app": "b"}, "10.244.1.3", 32769, {}),
    ("x", "pending", {"app": "a"}, None, None, {}),
    ("y", "c", {"app": "c"}, "10.244.2.4", None, {"web": ("TCP", 7070), "dns": ("UDP", 53)}),
    ("y", "d", {"app": "d"}, "10.244.1.5", 32770, {}),
    ("z", "e", {"app": "e"}, "10.244.2.6", None, {}),
]
POLICIES: list[dict[str, Any]] = [
    {
        "metadata": {"namespace": "x", "name": "web-from-b"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "a"}},
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "b"}}}],
                    "ports": [{"port": "web"}, {"port": 80, "endPort": 90}],
                }
            ],
        },
    },
    {
        "metadata": {"namespace": "x", "name": "a-egress"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "a"}},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [
                        {"namespaceSelector": {"matchLabels": {"team": "b"}}},
                        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}},
                    ],
                    "ports": [{"port": "web"}, {"protocol": "UDP", "port": 53}],
                }
            ],
        },
    },
    {"metadata": {"namespace": "y", "name": "deny-all"}, "spec": {"podSelector": {}}},
    {
        "metadata": {"namespace": "x", "name": "ignored"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "b"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchExpressions": [
                                    {"key": "team", "operator": "In", "values": ["b"]}
                                ]
                            },
                            "podSelector": {"matchLabels": {"app": "c"}},
                        }
                    ]
                }
            ],
            "egress": [{}],
        },
    },
]
NODE = NodeConfig(
    name="node-1",
    node_ip="192.168.0.11",
    pod_cidrs=("10.244.1.0/24",),
    gateway_ip="10.244.1.1",
    gateway_mac="0a:58:0a:f4:01:01",
    cluster_cidr="10.244.0.0/16",
)


def _pod_json(ns: str, name: str, labels: dict[str, str], ip: str | None, ports: Any) -> Any:
    container = {
        "name": "main",
        "ports": [
            {"name": n, "protocol": proto, "containerPort": number}
            for n, (proto, number) in ports.items()
        ],
    }
    status: dict[str, Any] = {"phase": "Running" if ip else "Pending"}
    if ip:
        status |= {"podIP": ip, "podIPs": [{"ip": ip}]}
    meta = {"namespace": ns, "name": name, "labels": labels}
    return {"metadata": meta, "spec": {"containers": [container]}, "status": status}


def feed(state: NodeState, kind: str, model: str, body: Any, api: ApiClient) -> None:
    """Give one API object (JSON) to the informer handler of ``kind``."""
    obj = api.deserialize(json.dumps(body), model, None)
    PolicyInputHandler(kind, state, api)("ADDED", obj)


def make_state(policies: list[dict[str, Any]] | None = None) -> NodeState:
    """The sample cluster's NodeState (``policies`` replaces ``POLICIES``)."""
    state = NodeState()
    state.set_node(NODE)
    api = ApiClient()
    for name, labels in NAMESPACES.items():
        body = {"metadata": {"name": name, "labels": labels}}
        feed(state, "namespaces", "V1Namespace", body, api)
    for ns, name, labels, ip, ofport, ports in PODS:
        feed(state, "k8s_pods", "V1Pod", _pod_json(ns, name, labels, ip, ports), api)
        if ofport is not None and ip is not None:
            mac = f"0a:58:0a:f4:01:{ofport & 0xFF:02x}"
            state.set_pod(PodPort(ofport, mac, (f"{ip}/24",), ns, name, f"cid-{name}"))
    for body in POLICIES if policies is None else policies:
        feed(state, "policies", "V1NetworkPolicy", body, api)
    return state


def make_view(state: NodeState) -> View:
    """The controller's View over ``state``, with the policy flows as installed flows."""
    reconciler = Reconciler(state, Switch(lambda _s: None), Metrics(), 1, lambda _r, _s: None)
    reconciler.installed = policy_flows(state.snapshot(), 1)
    facts = NodeFacts("node-1", "overlay", "vxlan", "netdev", "br-int")
    return View(facts, state, reconciler.switch, reconciler, None, list)  # type: ignore[arg-type]
