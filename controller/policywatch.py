"""NetworkPolicy inputs from the API server: policies, pods and namespaces.

Each informer event becomes a frozen model (`flows.policy_model`) in `NodeState`;
the reconciler recomputes the policy flows (debounced by its batching) and
applies the difference. A policy that fails to parse keeps its last good
version: dropping it would open everything it isolated.

The handler is ``raw``: its informer hands it the API server's JSON as dicts,
which the models parse directly (no client model objects in between).
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes.client import ApiClient

from controller.state import NodeState
from flows.policy_model import NamespaceMeta, PodMeta, Policy

LOG = logging.getLogger(__name__)
_KINDS = {"policies": Policy, "k8s_pods": PodMeta, "namespaces": NamespaceMeta}


class PolicyInputHandler:
    """An informer handler feeding one kind of policy input into the state."""

    raw = True  # the informer passes plain dicts (see controller/informer.py)

    def __init__(self, kind: str, state: NodeState, api: ApiClient) -> None:
        if kind not in _KINDS:
            raise ValueError(f"unknown policy input kind {kind!r}")
        self.kind = kind
        self.state = state
        self.api = api

    def __call__(self, event: str, obj: Any) -> None:
        # why both: a raw informer passes dicts; a model object still works.
        data = obj if isinstance(obj, dict) else self.api.sanitize_for_serialization(obj)
        meta = data.get("metadata") or {}
        name, namespace = meta.get("name"), meta.get("namespace")
        key = f"{namespace}/{name}" if namespace else str(name)
        if event == "DELETED":
            self.state.set_policy_input(self.kind, key, None)
            return
        try:
            value = _KINDS[self.kind].from_k8s(data)  # type: ignore[attr-defined]
        except ValueError as exc:
            LOG.warning("%s %s: %s; keeping the last good version", self.kind, key, exc)
            return
        self.state.set_policy_input(self.kind, key, value)
