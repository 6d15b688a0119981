"""``sluicectl policy explain``: argument handling, the summary, errors, and the GET client.

The HTTP edge is injected (``policy_explain(..., fetch, ...)``) with bodies the
controller's View really produces; two tests run the real client subprocess
against a RestServer on loopback (``--url``), as the sandbox runs it in a netns.
"""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest

from controller.metrics import Metrics
from controller.rest import RestServer, create_app
from sandbox import cli
from tests.unit.controller.policy_sample import make_state, make_view

VIEW = make_view(make_state())


class FakeFetch:
    """The HTTP edge: answers like the controller would, and records the URLs asked."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def __call__(self, url: str) -> tuple[int, str]:
        self.urls.append(url)
        query = parse_qs(urlsplit(url).query)
        namespace, pod = query["namespace"][0], query["pod"][0]
        try:
            return 200, VIEW.pod_policies(namespace, pod).model_dump_json(by_alias=True)
        except LookupError as exc:
            detail = {"parameter": getattr(exc, "parameter", "?"), "message": str(exc)}
            return 404, json.dumps({"detail": detail})


def explain(ref: str, as_json: bool = False) -> tuple[int, str, FakeFetch]:
    fetch, out = FakeFetch(), io.StringIO()
    namespace, name = cli.pod_arg(ref)
    code = cli.policy_explain(namespace, name, "http://node:9595", fetch, as_json, out)
    return code, out.getvalue(), fetch


@pytest.mark.parametrize("ref", ["web", "x/", "/a", "x/a/b", ""])
def test_a_bad_pod_argument_exits_2(ref: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["policy", "explain", ref, "--url", "http://127.0.0.1:1"])
    assert exc.value.code == 2
    assert "NAMESPACE/POD" in capsys.readouterr().err


def test_node_and_url_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["policy", "explain", "x/a", "--node", "n1", "--url", "http://h:1"])
    assert exc.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_summary_of_an_isolated_pod() -> None:
    code, text, fetch = explain("x/a")
    assert code == 0
    (url,) = fetch.urls
    assert url == "http://node:9595/v1/policies/explain?namespace=x&pod=a"
    lines = text.splitlines()
    assert lines[0] == "pod x/a  10.244.1.2  (on this node)"
    assert "ingress: isolated (default deny) - allowed only:" in lines
    assert "  policy x/web-from-b:" in lines
    assert "      from pods app=b -> x/b 10.244.1.3" in lines
    assert "      on TCP/web (= x/a:8080), TCP/80-90" in lines
    assert "      to namespaces team=b -> y/c 10.244.2.4; y/d 10.244.1.5" in lines
    assert "      to ipBlock 10.0.0.0/8 except 10.244.0.0/16" in lines
    assert "      on TCP/web (= y/c:7070), UDP/53" in lines


def test_summary_of_default_deny_and_of_an_unselected_pod() -> None:
    _, denied, _ = explain("y/d")
    assert "  policy y/deny-all:\n    no ingress rules - allows nothing\n" in denied
    assert "egress: not isolated - all traffic allowed" in denied
    _, free, _ = explain("z/e")
    assert "ingress: not isolated" in free and "egress: not isolated" in free
    assert "policy " not in free


def test_json_output_is_the_answer() -> None:
    code, text, _ = explain("x/b", as_json=True)
    assert code == 0
    assert json.loads(text) == json.loads(VIEW.pod_policies("x", "b").model_dump_json())


def test_unknown_pod_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, text, _ = explain("x/gone")
    assert (code, text) == (1, "")
    assert "HTTP 404: unknown pod 'x/gone'" in capsys.readouterr().err


def test_unreachable_controller_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    def down(url: str) -> tuple[int, str]:
        raise cli.FetchError(f"cannot reach {url}: connection refused")

    assert cli.policy_explain("x", "a", "http://n:1", down, False, io.StringIO()) == 1
    assert "connection refused" in capsys.readouterr().err


@pytest.fixture
def server() -> Iterator[RestServer]:
    server = RestServer(create_app(VIEW, Metrics()), port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_url_runs_the_real_client(server: RestServer, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{server.port}"
    assert cli.main(["policy", "explain", "x/a", "--url", url, "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["pod"]["name"], body["ingress"]["isolated"]) == ("a", True)
    assert cli.main(["policy", "explain", "nowhere/a", "--url", url]) == 1
    assert "HTTP 404: unknown namespace 'nowhere'" in capsys.readouterr().err


def test_the_client_reports_a_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(cli.FetchError, match="cannot reach"):
            cli.command_fetch([])(f"http://127.0.0.1:{port}/v1/policies")


@pytest.mark.parametrize(
    ("config", "url"),
    [
        ("nodeName: n1\n", "http://127.0.0.1:9595"),
        ("rest: {host: 0.0.0.0, port: 9700}\n", "http://127.0.0.1:9700"),
        ("rest: {host: '::1', port: 9701}\n", "http://[::1]:9701"),
    ],
)
def test_controller_url_from_the_node_config(tmp_path: Path, config: str, url: str) -> None:
    (tmp_path / "sluice").mkdir()
    (tmp_path / "sluice" / "controller.yaml").write_text(config)
    assert cli.controller_url(SimpleNamespace(name="n1", dir=tmp_path)) == url
