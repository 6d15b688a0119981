"""A synthetic cluster in a real API server: nodes, pods, namespaces, NetworkPolicies, churn.

The object bodies are pure functions of an index and a ``Shape`` (so tests can
check them without a server). ``Kube`` is a minimal JSON-over-HTTPS client
with one keep-alive connection per thread; the benchmark runs it from threads
that entered the API server's netns. No kubelet runs: pods are created with
``nodeName`` and their IPs are written through the status subresource.

Addressing: node ``i`` owns podCIDR ``10.128.0.0/14`` + ``i``×256 (/24, so at
most 1024 nodes) and InternalIP ``100.64.0.0`` + ``i`` + 1; pod ``j`` runs on
node ``j mod nodes`` with the ``(j div nodes)``-th address after the gateway.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from controller.k8s import UPLINK_MAC_ANNOTATION

CLUSTER_NET = ipaddress.ip_network("10.128.0.0/14")
NODE_IP_BASE = ipaddress.ip_address("100.64.0.0")
APPS = 20
TIERS = ("web", "api", "db")
MERGE_PATCH = "application/merge-patch+json"
_ATTEMPTS = 5


@dataclass(frozen=True)
class Shape:
    """How big the synthetic cluster is."""

    nodes: int
    pods: int
    namespaces: int
    policies: int

    def __post_init__(self) -> None:
        if not 1 <= self.nodes <= CLUSTER_NET.num_addresses // 256:
            raise ValueError(f"nodes: {self.nodes} not in 1..{CLUSTER_NET.num_addresses // 256}")
        if self.pods > self.nodes * 250 or min(self.pods, self.namespaces, self.policies) < 0:
            raise ValueError(f"pods: {self.pods} do not fit 250 per node")
        if self.namespaces < 1:
            raise ValueError("namespaces: need at least one")


def node_name(i: int) -> str:
    """Name of node ``i``."""
    return f"node-{i:04d}"


def node_pod_cidr(i: int) -> str:
    """The /24 podCIDR of node ``i``."""
    return str(ipaddress.ip_network((int(CLUSTER_NET.network_address) + i * 256, 24)))


def node_ip(i: int) -> str:
    """The InternalIP of node ``i``."""
    return str(NODE_IP_BASE + i + 1)


def node_body(i: int) -> dict[str, Any]:
    """A Node as a kubelet + controller-manager would leave it (status set on create)."""
    mac = f"02:5e:00:00:{i >> 8:02x}:{i & 0xFF:02x}"
    return {
        "metadata": {
            "name": node_name(i),
            "labels": {"kubernetes.io/hostname": node_name(i)},
            "annotations": {UPLINK_MAC_ANNOTATION: mac},
        },
        "spec": {"podCIDR": node_pod_cidr(i), "podCIDRs": [node_pod_cidr(i)]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node_ip(i)},
                {"type": "Hostname", "address": node_name(i)},
            ]
        },
    }


def namespace_name(k: int) -> str:
    """Name of namespace ``k``."""
    return f"bench-{k}"


def namespace_body(k: int) -> dict[str, Any]:
    """A namespace with a team label (policies select namespaces by it)."""
    return {"metadata": {"name": namespace_name(k), "labels": {"team": f"team-{k % 2}"}}}


def _spread(j: int, shape: Shape) -> int:
    # why: node = j mod nodes; adding j div nodes keeps one node's pods from all
    # sharing a namespace, app and tier when nodes is a multiple of their counts.
    return j + j // shape.nodes


def pod_ref(j: int, shape: Shape) -> tuple[str, str]:
    """(namespace, name) of pod ``j``."""
    return namespace_name(_spread(j, shape) % shape.namespaces), f"pod-{j:05d}"


def pods_on_node(i: int, shape: Shape) -> list[int]:
    """The pods of node ``i``."""
    return list(range(i, shape.pods, shape.nodes))


def pod_path(j: int, shape: Shape) -> str:
    """The API path of pod ``j``."""
    ns, name = pod_ref(j, shape)
    return f"/api/v1/namespaces/{ns}/pods/{name}"


def pod_ip(j: int, shape: Shape) -> str:
    """The IP of pod ``j``, inside its node's podCIDR (.2 upwards)."""
    cidr = ipaddress.ip_network(node_pod_cidr(j % shape.nodes))
    return str(cidr.network_address + 2 + j // shape.nodes)


def pod_body(j: int, shape: Shape) -> dict[str, Any]:
    """A pod bound to its node, with a named container port."""
    ns, name = pod_ref(j, shape)
    k = _spread(j, shape)
    return {
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app": f"app-{k % APPS}", "tier": TIERS[k % len(TIERS)]},
        },
        "spec": {
            "nodeName": node_name(j % shape.nodes),
            "containers": [
                {
                    "name": "main",
                    "image": "bench.invalid/none:1",
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                }
            ],
        },
    }


def pod_status(j: int, shape: Shape) -> dict[str, Any]:
    """The status a kubelet would report for a running pod (merge patch body)."""
    ip = pod_ip(j, shape)
    return {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


def _policy_rules(k: int) -> dict[str, Any]:
    tcp = {"protocol": "TCP", "port": 8080}
    variant = k % 5
    if variant == 0:
        peer = {"podSelector": {"matchLabels": {"app": f"app-{(k + 1) % APPS}"}}}
        return {"ingress": [{"from": [peer], "ports": [tcp]}]}
    if variant == 1:
        peer = {"namespaceSelector": {"matchLabels": {"team": f"team-{k % 2}"}}}
        return {"ingress": [{"from": [peer], "ports": [{"protocol": "TCP", "port": "http"}]}]}
    if variant == 2:
        block = {"ipBlock": {"cidr": str(CLUSTER_NET), "except": [node_pod_cidr(1)]}}
        db = {"podSelector": {"matchLabels": {"tier": "db"}}}
        return {
            "ingress": [{"from": [block]}],
            "egress": [{"to": [db], "ports": [{"protocol": "TCP", "port": 5432}]}],
        }
    if variant == 3:
        peer = {"namespaceSelector": {}, "podSelector": {"matchLabels": {"tier": "api"}}}
        return {"policyTypes": ["Egress"], "egress": [{"to": [peer], "ports": [tcp]}]}
    expr = {"key": "tier", "operator": "In", "values": ["web", "api"]}
    return {"ingress": [{"from": [{"podSelector": {"matchExpressions": [expr]}}], "ports": [tcp]}]}


def policy_body(k: int, shape: Shape) -> dict[str, Any]:
    """NetworkPolicy ``k``: five rule shapes in turn (pods, namespaces, ipBlock, egress, exprs)."""
    return {
        "metadata": {"name": f"policy-{k:03d}", "namespace": namespace_name(k % shape.namespaces)},
        "spec": {"podSelector": {"matchLabels": {"app": f"app-{k % APPS}"}}, **_policy_rules(k)},
    }


class KubeError(RuntimeError):
    """The API server answered an error status."""

    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        super().__init__(f"{method} {path}: {status} {body[:300]!r}")
        self.status = status


class Kube:
    """JSON over HTTPS with one keep-alive connection per calling thread."""

    def __init__(self, host: str, port: int, ctx: ssl.SSLContext) -> None:
        self.host, self.port, self.ctx = host, port, ctx
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPSConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        self._conn().close()
        self._local.conn = None

    def call(self, method: str, path: str, body: Any = None, ctype: str = "") -> Any:
        """One request; retries dropped connections, 429 and 5xx; KubeError otherwise."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json", "Content-Type": ctype or "application/json"}
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                self._conn().request(method, path, data, headers)
                resp = self._conn().getresponse()
                text = resp.read()
            except (http.client.HTTPException, OSError):
                self._drop()
                if attempt == _ATTEMPTS:
                    raise
                continue
            if (resp.status == 429 or resp.status >= 500) and attempt < _ATTEMPTS:
                time.sleep(0.2 * attempt)
                continue
            if resp.status >= 300:
                raise KubeError(method, path, resp.status, text)
            return json.loads(text) if text else None
        raise AssertionError("unreachable")

    def create(self, path: str, body: dict[str, Any]) -> None:
        """POST ``body`` to collection ``path``; an existing object is fine (a retried POST)."""
        try:
            self.call("POST", path, body)
        except KubeError as exc:
            if exc.status != 409:
                raise

    def patch(self, path: str, body: dict[str, Any]) -> None:
        """A JSON merge patch."""
        self.call("PATCH", path, body, MERGE_PATCH)


def _run_all(ex: Executor, tasks: Iterable[Callable[[], None]]) -> float:
    """Run tasks on ``ex``; re-raise the first failure; return the wall seconds."""
    start = time.perf_counter()
    for future in [ex.submit(t) for t in tasks]:
        future.result()
    return time.perf_counter() - start


def populate(kube: Kube, ex: Executor, shape: Shape) -> dict[str, float]:
    """Create namespaces, nodes, pods (+ status) and policies; return seconds per kind."""

    def pod(j: int) -> None:
        ns, _ = pod_ref(j, shape)
        kube.create(f"/api/v1/namespaces/{ns}/pods", pod_body(j, shape))
        kube.patch(pod_path(j, shape) + "/status", pod_status(j, shape))

    def policy(k: int) -> None:
        ns = namespace_name(k % shape.namespaces)
        path = f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"
        kube.create(path, policy_body(k, shape))

    steps: list[tuple[str, list[Callable[[], None]]]] = [
        ("namespaces", [_bind(kube.create, "/api/v1/namespaces", namespace_body(k))
                        for k in range(shape.namespaces)]),
        ("nodes", [_bind(kube.create, "/api/v1/nodes", node_body(i)) for i in range(shape.nodes)]),
        ("pods", [_bind(pod, j) for j in range(shape.pods)]),
        ("policies", [_bind(policy, k) for k in range(shape.policies)]),
    ]  # fmt: skip
    return {f"{name}_s": round(_run_all(ex, tasks), 2) for name, tasks in steps}


def _bind(fn: Callable[..., None], *args: Any) -> Callable[[], None]:
    return lambda: fn(*args)


def churn(
    kube: Kube, ex: Executor, shape: Shape, rate: float, seconds: float, seed: int = 7
) -> dict[str, float]:
    """Relabel random pods ``rate`` times a second for ``seconds`` (moving them between tiers).

    Returns the updates sent, the achieved rate and the failures.
    """
    rng = random.Random(seed)
    count = int(rate * seconds)
    start = time.monotonic()
    futures = []
    for n in range(count):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        j = rng.randrange(shape.pods)
        labels = {"tier": TIERS[(j + n) % len(TIERS)], "rev": str(n)}
        futures.append(ex.submit(kube.patch, pod_path(j, shape), {"metadata": {"labels": labels}}))
    failures = sum(1 for f in futures if f.exception() is not None)
    elapsed = time.monotonic() - start
    return {"updates": count, "rate_per_s": round(count / elapsed, 1), "failures": failures}
