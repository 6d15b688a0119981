"""The few Kubernetes API calls the controller makes, as JSON through the official client.

``RawApi`` sends its requests with the ``kubernetes`` package's ``ApiClient``,
which still does everything that matters: kubeconfig or in-cluster
credentials, TLS, token refresh, query encoding, and ``ApiException`` for an
error status. What it skips are the generated ``CoreV1Api``/``NetworkingV1Api``
classes.

Why: importing those two modules builds a pydantic model class for every type
their API groups mention (≈ 24 MiB of RSS and ≈ 290 modules, measured with
kubernetes 37), only to make five calls whose answers the controller reads as
JSON anyway (its informers are raw, see controller/informer.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

NODES = "/api/v1/nodes"
NAMESPACES = "/api/v1/namespaces"
PODS = "/api/v1/pods"
NETWORK_POLICIES = "/apis/networking.k8s.io/v1/networkpolicies"
# the informer's keyword arguments (the generated clients' names) -> query parameters
_QUERY = {
    "watch": "watch",
    "limit": "limit",
    "_continue": "continue",
    "resource_version": "resourceVersion",
    "timeout_seconds": "timeoutSeconds",
    "allow_watch_bookmarks": "allowWatchBookmarks",
}
_AUTH = ["BearerToken"]


class RawApi:
    """List, watch and patch through one ``ApiClient``; answers stay undecoded."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    def lister(self, path: str) -> Callable[..., Any]:
        """A ``list_fn`` for a raw ``Informer``: GET ``path`` (a whole collection).

        Takes the informer's keyword arguments; returns the urllib3 response
        unread, as the generated clients do with ``_preload_content=False``.
        """

        def list_fn(_preload_content: bool = True, **kwargs: Any) -> Any:
            if _preload_content:
                raise TypeError("RawApi answers are raw: pass _preload_content=False")
            unknown = set(kwargs) - set(_QUERY)
            if unknown:
                raise TypeError(f"unsupported list arguments {sorted(unknown)}")
            query = [(_QUERY[k], v) for k, v in kwargs.items() if v is not None]
            return self._request("GET", path, query)

        return list_fn

    def patch_node(self, name: str, body: dict[str, Any]) -> None:
        """A strategic merge patch of Node ``name`` (e.g. an annotation)."""
        resp = self._request("PATCH", f"{NODES}/{{name}}", [], body, {"name": name})
        resp.release_conn()

    def _request(
        self,
        method: str,
        path: str,
        query: list[tuple[str, Any]],
        body: Any = None,
        path_params: dict[str, str] | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/strategic-merge-patch+json"
        request = self.api.param_serialize(
            method=method,
            resource_path=path,
            path_params=path_params or {},
            query_params=query,
            header_params=headers,
            body=body,
            auth_settings=_AUTH,
        )
        resp = self.api.call_api(*request)
        if not 200 <= resp.status <= 299:
            resp.read()
            raise ApiException.from_response(http_resp=resp, body=None, data=None)
        return resp.response
