"""The `sluice` binary against a real CNI server socket, run as the runtime runs it.

Every test runs against both shims: the Python one (cni/shim.py) and the native
one (cni/shim.c, built with `make cni-shim`; skipped where it cannot be built).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from cni import install, shim, types
from cni.server import CniServer
from tests.unit.cni.test_skel import RecordingPlugin

SHIM = Path(shim.__file__)
_NATIVE: list[Path | None] = []

Env = Mapping[str, str] | Mapping[bytes, bytes]


def native_shim() -> Path:
    """The native shim, built once per session; skip the test where it cannot be built."""
    if not _NATIVE:
        _NATIVE.append(install.build_native())
    if _NATIVE[0] is None:
        pytest.skip("the native shim cannot be built here (make or a C compiler missing)")
    return _NATIVE[0]


@pytest.fixture(params=["python", "native"])
def argv(request: pytest.FixtureRequest) -> list[str]:
    """The command line of the shim under test."""
    if request.param == "native":
        return [str(native_shim())]
    return [sys.executable, "-I", "-S", str(SHIM)]


def run_raw(argv: list[str], env: Env, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=stdin, env=env, capture_output=True, timeout=30, check=False)


def run_shim(argv: list[str], env: Env, conf: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    proc = run_raw(argv, env, json.dumps(conf).encode())
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}


@pytest.fixture
def conf(tmp_path: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.1.0",
        "name": "sluice",
        "type": "sluice",
        "serverSocket": str(tmp_path / "run" / "cni.sock"),
        "stateDir": str(tmp_path / "state"),
    }


@pytest.fixture
def served(conf: dict[str, Any]) -> Iterator[RecordingPlugin]:
    """A CNI server on conf's socket with a recording plugin."""
    plugin = RecordingPlugin()
    server = CniServer(conf["serverSocket"], plugin)
    server.start()
    yield plugin
    server.stop()


def env(command: str) -> dict[str, str]:
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "abc",
        "CNI_NETNS": "/run/netns/none",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/usr/lib/cni",
    }


def test_shim_versions_match_the_plugin() -> None:
    assert shim.SUPPORTED_VERSIONS == types.SUPPORTED_VERSIONS


@pytest.mark.parametrize("asked,answered", [("0.4.0", "0.4.0"), ("9.9.9", "1.1.0")])
def test_version_is_answered_without_server(argv: list[str], asked: str, answered: str) -> None:
    rc, out = run_shim(argv, {"CNI_COMMAND": "VERSION"}, {"cniVersion": asked})
    assert rc == 0 and out["cniVersion"] == answered
    assert out["supportedVersions"] == list(types.SUPPORTED_VERSIONS)


def test_forwards_to_server_and_relays_answer(
    argv: list[str], conf: dict[str, Any], served: RecordingPlugin
) -> None:
    rc, out = run_shim(argv, env("ADD"), conf)
    assert rc == 0 and out == {"cniVersion": "1.1.0", "ips": []}
    assert Path(conf["serverSocket"]).stat().st_mode & 0o777 == 0o600
    rc, out = run_shim(argv, dict(env("ADD"), CNI_IFNAME="bad/name"), conf)
    assert rc == 1 and out["code"] == 4
    assert [c[0] for c in served.calls] == ["ADD"]


def test_env_and_stdin_reach_the_server_unchanged(
    argv: list[str], conf: dict[str, Any], served: RecordingPlugin
) -> None:
    odd = 'quote" back\\slash\nnew line\ttab é ☃ 😀'
    environ = {
        **{k.encode(): v.encode() for k, v in env("DEL").items()},
        b"CNI_ODD": odd.encode(),
        b"CNI_NOT_UTF8": b"a\xffb",
        b"PATH": b"/bin",
        b"NOT_FORWARDED": b"1",
    }
    stdin = (json.dumps({**conf, "dns": {"search": [odd]}}, ensure_ascii=False) + "\n ").encode()
    proc = run_raw(argv, environ, stdin)
    assert proc.returncode == 0, proc.stdout
    ((_, args, _),) = served.calls
    assert args.stdin == stdin
    expected = {**env("DEL"), "CNI_ODD": odd, "CNI_NOT_UTF8": "a\udcffb", "PATH": "/bin"}
    assert dict(args.env) == expected


def test_members_are_read_at_the_top_level_only(
    argv: list[str], conf: dict[str, Any], served: RecordingPlugin
) -> None:
    nested = {"serverSocket": "/nonexistent/wrong.sock", "x": [1, -2.5e3, True, None, "}"]}
    text = json.dumps({**conf, "runtimeConfig": nested}).replace("/", "\\/")
    proc = run_raw(argv, env("ADD"), text.encode())
    assert proc.returncode == 0, proc.stdout
    assert len(served.calls) == 1


class UnicodePlugin(RecordingPlugin):
    """Answers ADD with non-ASCII text (escaped as \\uXXXX by the server)."""

    def add(self, args: Any, conf: Any) -> dict[str, Any]:
        return {"cniVersion": conf.cni_version, "dns": {"domain": "é☃😀"}}


def test_non_ascii_answer_is_relayed(argv: list[str], conf: dict[str, Any]) -> None:
    server = CniServer(conf["serverSocket"], UnicodePlugin())
    server.start()
    try:
        rc, out = run_shim(argv, env("ADD"), conf)
    finally:
        server.stop()
    assert rc == 0 and out["dns"] == {"domain": "é☃😀"}


@pytest.mark.parametrize("served_too", [False, True])
def test_invalid_json_is_code_6(
    argv: list[str], conf: dict[str, Any], served_too: bool, request: pytest.FixtureRequest
) -> None:
    if served_too:
        request.getfixturevalue("served")
    proc = run_raw(argv, env("ADD"), b'{"cniVersion": "1.0.0",')
    assert proc.returncode == 1 and json.loads(proc.stdout)["code"] == 6


@pytest.mark.parametrize("command,code", [("ADD", 11), ("CHECK", 11), ("GC", 11), ("STATUS", 50)])
def test_server_down_codes(argv: list[str], conf: dict[str, Any], command: str, code: int) -> None:
    rc, out = run_shim(argv, env(command), conf)
    assert rc == 1 and out["code"] == code and conf["serverSocket"] in out["details"]
    assert out["cniVersion"] == "1.1.0"


def test_malformed_reply_is_try_again_later(argv: list[str], conf: dict[str, Any]) -> None:
    path = conf["serverSocket"]
    Path(path).parent.mkdir(parents=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def answer_garbage() -> None:
        conn, _ = listener.accept()
        with conn:
            while conn.recv(65536):
                pass
            conn.sendall(b'{"stdout": "no rc"}')

    thread = threading.Thread(target=answer_garbage)
    thread.start()
    try:
        rc, out = run_shim(argv, env("ADD"), conf)
    finally:
        thread.join(10)
        listener.close()
    assert rc == 1 and out["code"] == 11 and "malformed" in out["details"]


def test_del_with_server_down_succeeds_and_is_replayed(
    argv: list[str], conf: dict[str, Any]
) -> None:
    rc, out = run_shim(argv, dict(env("DEL"), CNI_NETNS=""), conf)
    assert rc == 0 and out == {}
    spooled = list((Path(conf["stateDir"]) / "pending-del").glob("*.json"))
    assert [p.name for p in spooled] == ["abc_eth0.json"]
    plugin = RecordingPlugin()
    server = CniServer(conf["serverSocket"], plugin)
    assert server.replay_pending_deletes(conf["stateDir"]) == []
    ((name, args, _),) = plugin.calls
    assert (name, args.container_id, args.ifname, args.netns) == ("DEL", "abc", "eth0", "")
    assert not any((Path(conf["stateDir"]) / "pending-del").glob("*.json"))


def test_del_that_cannot_be_recorded_is_code_5(argv: list[str], conf: dict[str, Any]) -> None:
    Path(conf["stateDir"]).write_text("a file where the state directory should be")
    rc, out = run_shim(argv, env("DEL"), conf)
    assert rc == 1 and out["code"] == 5


def test_failed_replay_keeps_the_record(argv: list[str], conf: dict[str, Any]) -> None:
    run_shim(argv, dict(env("DEL")), conf)
    server = CniServer(conf["serverSocket"], RecordingPlugin(RuntimeError("still broken")))
    failed = server.replay_pending_deletes(conf["stateDir"])
    assert len(failed) == 1 and "still broken" in failed[0]
    assert len(list((Path(conf["stateDir"]) / "pending-del").glob("*.json"))) == 1


def test_malformed_request_gets_code_6() -> None:
    server = CniServer("/nonexistent/unused.sock", RecordingPlugin())
    rc, out = server.handle_request_bytes(b"garbage")
    assert rc == 1 and json.loads(out)["code"] == 6


class SlowPlugin(RecordingPlugin):
    """Holds each ADD for a while, so connections pile up in the listen backlog."""

    def add(self, args: Any, conf: Any) -> dict[str, Any]:
        import time

        time.sleep(0.2)
        return super().add(args, conf)


def test_many_simultaneous_shims_all_get_through(argv: list[str], conf: dict[str, Any]) -> None:
    server = CniServer(conf["serverSocket"], SlowPlugin())
    server.start()
    try:
        procs = [
            subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=dict(env("ADD"), CNI_CONTAINERID=f"c{i}"),
            )
            for i in range(40)
        ]
        outs = [p.communicate(json.dumps(conf).encode(), timeout=60)[0] for p in procs]
    finally:
        server.stop()
    assert [p.returncode for p in procs] == [0] * 40, outs


def test_install_prefers_a_working_native_shim(tmp_path: Path) -> None:
    python = install.install_binary(tmp_path / "a", native=tmp_path / "missing")
    assert install.shim_kind(python) == "python"
    broken = tmp_path / "broken"
    broken.write_bytes(b"\x7fELF not really")
    broken.chmod(0o755)
    assert install.shim_kind(install.install_binary(tmp_path / "b", native=broken)) == "python"
    native = install.install_binary(tmp_path / "c", native=native_shim())
    assert install.shim_kind(native) == "native" and install.native_runs(native)
