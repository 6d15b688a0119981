"""RawApi against a local HTTP server, through the real kubernetes ApiClient."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException

from controller.informer import Informer
from controller.k8s import NodeHandler
from controller.kubeapi import NODES, PODS, RawApi
from controller.state import NodeState


class Server(ThreadingHTTPServer):
    """Records requests; answers each from ``reply(method, path, body)``."""

    seen: list[tuple[str, str, Any, Any]]  # method, path, headers (any case), body

    def reply(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if path.startswith("/api/v1/nodes?"):
            addresses = [{"type": "InternalIP", "address": "192.0.2.2"}]
            node = {
                "metadata": {"name": "n2", "resourceVersion": "3"},
                "spec": {"podCIDR": "10.244.2.0/24"},
                "status": {"addresses": addresses},
            }
            return 200, {"metadata": {"resourceVersion": "7"}, "items": [node]}
        if method == "PATCH":
            return 200, body
        return 404, {"kind": "Status", "code": 404, "message": "no"}


class Handler(BaseHTTPRequestHandler):
    server: Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.seen.append((self.command, self.path, self.headers, body))
        status, answer = self.server.reply(self.command, self.path, body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def raw() -> Iterator[tuple[RawApi, Server]]:
    server = Server(("127.0.0.1", 0), Handler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    cfg = Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
    cfg.api_key = {"BearerToken": "Bearer t0ken"}
    api = ApiClient(cfg)
    try:
        yield RawApi(api), server
    finally:
        api.close()
        server.shutdown()
        server.server_close()


def test_lister_sends_the_informer_arguments_as_query_and_token(raw: Any) -> None:
    api, server = raw
    resp = api.lister(NODES)(watch=False, limit=500, _continue="abc", _preload_content=False)
    assert json.loads(resp.data)["metadata"]["resourceVersion"] == "7"
    resp.release_conn()
    method, path, headers, _ = server.seen[0]
    assert (method, path) == ("GET", "/api/v1/nodes?watch=false&limit=500&continue=abc")
    assert headers["Authorization"] == "Bearer t0ken"


def test_raw_node_informer_fills_the_remotes(raw: Any) -> None:
    api, _ = raw
    state = NodeState()
    informer = Informer("nodes", api.lister(NODES), NodeHandler("me", state, lambda c, ip: None))
    assert informer.relist() == "7"
    assert state.snapshot().remotes["node/n2"].pod_cidrs == ("10.244.2.0/24",)


def test_error_status_raises_api_exception_and_models_are_refused(raw: Any) -> None:
    api, _ = raw
    with pytest.raises(ApiException) as err:
        api.lister(PODS)(watch=False, _preload_content=False)
    assert err.value.status == 404
    with pytest.raises(TypeError):
        api.lister(PODS)(watch=False)  # a model informer cannot use it


def test_patch_node_is_a_strategic_merge_patch(raw: Any) -> None:
    api, server = raw
    body = {"metadata": {"annotations": {"sluice.io/uplink-mac": "02:00:00:00:00:01"}}}
    api.patch_node("node-a", body)
    method, path, headers, sent = server.seen[0]
    assert (method, path, sent) == ("PATCH", "/api/v1/nodes/node-a", body)
    assert headers["Content-Type"] == "application/strategic-merge-patch+json"
