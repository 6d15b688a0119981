"""kubectl helpers shared by the e2e modules (all through the sandbox's ControlPlane)."""

from __future__ import annotations

import json
from typing import Any

from sandbox.controlplane import ControlPlane


def apply(cp: ControlPlane, *objs: dict[str, Any]) -> None:
    """kubectl apply the given objects."""
    cp.kubectl(
        "apply",
        "-f",
        "-",
        input_=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}),
    )


def pods(cp: ControlPlane, selector: str) -> list[dict[str, Any]]:
    """Pods matching a label selector, as JSON objects."""
    return json.loads(cp.kubectl("get", "pods", "-l", selector, "-o", "json"))["items"]


def pod_cidrs(cp: ControlPlane) -> dict[str, str]:
    """node name → spec.podCIDR ("" if unset)."""
    nodes = json.loads(cp.kubectl("get", "nodes", "-o", "json"))["items"]
    return {n["metadata"]["name"]: n["spec"].get("podCIDR", "") for n in nodes}
