"""The `sluice` binary against a real CNI server socket, run as the runtime runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cni import shim, types
from cni.server import CniServer
from tests.unit.cni.test_skel import RecordingPlugin

SHIM = Path(shim.__file__)


def run_shim(env: dict[str, str], conf: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(SHIM)],
        input=json.dumps(conf).encode(),
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
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


def test_version_is_answered_without_server(conf: dict[str, Any]) -> None:
    rc, out = run_shim({"CNI_COMMAND": "VERSION"}, {"cniVersion": "0.4.0"})
    assert rc == 0 and out["cniVersion"] == "0.4.0" and "1.1.0" in out["supportedVersions"]


def test_forwards_to_server_and_relays_answer(conf: dict[str, Any]) -> None:
    plugin = RecordingPlugin()
    server = CniServer(conf["serverSocket"], plugin)
    server.start()
    try:
        rc, out = run_shim(env("ADD"), conf)
        assert rc == 0 and out == {"cniVersion": "1.1.0", "ips": []}
        assert Path(conf["serverSocket"]).stat().st_mode & 0o777 == 0o600
        rc, out = run_shim(dict(env("ADD"), CNI_IFNAME="bad/name"), conf)
        assert rc == 1 and out["code"] == 4
    finally:
        server.stop()
    assert [c[0] for c in plugin.calls] == ["ADD"]


@pytest.mark.parametrize("command,code", [("ADD", 11), ("CHECK", 11), ("GC", 11), ("STATUS", 50)])
def test_server_down_codes(conf: dict[str, Any], command: str, code: int) -> None:
    rc, out = run_shim(env(command), conf)
    assert rc == 1 and out["code"] == code and conf["serverSocket"] in out["details"]


def test_del_with_server_down_succeeds_and_is_replayed(conf: dict[str, Any]) -> None:
    rc, out = run_shim(dict(env("DEL"), CNI_NETNS=""), conf)
    assert rc == 0 and out == {}
    spooled = list((Path(conf["stateDir"]) / "pending-del").glob("*.json"))
    assert len(spooled) == 1
    plugin = RecordingPlugin()
    server = CniServer(conf["serverSocket"], plugin)
    assert server.replay_pending_deletes(conf["stateDir"]) == []
    ((name, args, _),) = plugin.calls
    assert (name, args.container_id, args.ifname, args.netns) == ("DEL", "abc", "eth0", "")
    assert not any((Path(conf["stateDir"]) / "pending-del").glob("*.json"))


def test_failed_replay_keeps_the_record(conf: dict[str, Any]) -> None:
    run_shim(dict(env("DEL")), conf)
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


def test_many_simultaneous_shims_all_get_through(conf: dict[str, Any]) -> None:
    server = CniServer(conf["serverSocket"], SlowPlugin())
    server.start()
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-I", "-S", str(SHIM)],
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
