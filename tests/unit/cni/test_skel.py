"""The CNI protocol layer with injected env/stdin/stdout: codes, gates, dispatch."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from cni import skel
from cni.config import NetConf
from cni.skel import CmdArgs
from cni.types import CniError

BASE_ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c0ffee",
    "CNI_NETNS": "/var/run/netns/x",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
}


class RecordingPlugin:
    """Answers every command; remembers what reached it."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, CmdArgs, NetConf]] = []
        self.fail = fail

    def _called(self, name: str, args: CmdArgs, conf: NetConf) -> None:
        self.calls.append((name, args, conf))
        if self.fail:
            raise self.fail

    def add(self, args: CmdArgs, conf: NetConf) -> dict[str, Any]:
        self._called("ADD", args, conf)
        return {"cniVersion": conf.cni_version, "ips": []}

    def delete(self, args: CmdArgs, conf: NetConf) -> None:
        self._called("DEL", args, conf)

    def check(self, args: CmdArgs, conf: NetConf) -> None:
        self._called("CHECK", args, conf)

    def status(self, args: CmdArgs, conf: NetConf) -> None:
        self._called("STATUS", args, conf)

    def gc(self, args: CmdArgs, conf: NetConf) -> None:
        self._called("GC", args, conf)


def conf(version: str = "1.0.0", **extra: Any) -> bytes:
    return json.dumps({"cniVersion": version, "name": "sluice", "type": "sluice", **extra}).encode()


def invoke(env: dict[str, str], stdin: bytes, plugin: Any = None) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    rc = skel.run(env, stdin, out, plugin or RecordingPlugin())
    return rc, json.loads(out.getvalue()) if out.getvalue() else {}


def test_add_dispatches_with_parsed_args() -> None:
    plugin = RecordingPlugin()
    env = dict(BASE_ENV, CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p")
    rc, out = invoke(env, conf(), plugin)
    assert rc == 0 and out == {"cniVersion": "1.0.0", "ips": []}
    ((name, args, netconf),) = plugin.calls
    assert name == "ADD" and args.args["K8S_POD_NAME"] == "p" and args.path == ("/opt/cni/bin",)
    assert netconf.name == "sluice"


@pytest.mark.parametrize(
    "command,missing",
    [
        ("ADD", "CNI_NETNS"),
        ("ADD", "CNI_CONTAINERID"),
        ("ADD", "CNI_IFNAME"),
        ("ADD", "CNI_PATH"),
        ("CHECK", "CNI_NETNS"),
        ("DEL", "CNI_CONTAINERID"),
        ("DEL", "CNI_IFNAME"),
        ("DEL", "CNI_PATH"),
        ("GC", "CNI_PATH"),
    ],
)
def test_each_missing_env_var_is_code_4_and_named(command: str, missing: str) -> None:
    env = dict(BASE_ENV, CNI_COMMAND=command)
    del env[missing]
    plugin = RecordingPlugin()
    rc, out = invoke(env, conf("1.1.0"), plugin)
    assert rc == 1 and out["code"] == 4 and missing in out["msg"]
    assert plugin.calls == []


def test_del_without_netns_is_allowed() -> None:
    env = dict(BASE_ENV, CNI_COMMAND="DEL", CNI_NETNS="")
    rc, _ = invoke(env, conf())
    assert rc == 0


def test_missing_command_and_unknown_command() -> None:
    env = dict(BASE_ENV)
    del env["CNI_COMMAND"]
    assert invoke(env, conf())[1]["code"] == 4
    rc, out = invoke(dict(BASE_ENV, CNI_COMMAND="FROB"), conf())
    assert out["code"] == 4 and "FROB" in out["msg"]


@pytest.mark.parametrize("ifname", ["", ".", "..", "a/b", "a:b", "a b", "x" * 16])
def test_bad_ifname(ifname: str) -> None:
    rc, out = invoke(dict(BASE_ENV, CNI_IFNAME=ifname), conf())
    assert rc == 1 and out["code"] == 4


def test_bad_container_id() -> None:
    rc, out = invoke(dict(BASE_ENV, CNI_CONTAINERID="-bad id"), conf())
    assert out["code"] == 4 and "CNI_CONTAINERID" in out["msg"]


def test_bad_json_is_code_6() -> None:
    rc, out = invoke(BASE_ENV, b"{not json")
    assert rc == 1 and out["code"] == 6


def test_unknown_version_is_code_1() -> None:
    rc, out = invoke(BASE_ENV, conf("0.2.0"))
    assert rc == 1 and out["code"] == 1 and "0.2.0" in out["msg"]


def test_unknown_key_is_code_2_naming_it() -> None:
    rc, out = invoke(BASE_ENV, conf(bridgeName="br0"))
    assert out["code"] == 2 and "bridgeName" in out["msg"] and "br0" in out["details"]


@pytest.mark.parametrize("bad", [{"mtu": 10}, {"mtu": "1400"}, {"ipam": []}, {"name": ""}])
def test_invalid_values_are_code_7(bad: dict[str, Any]) -> None:
    rc, out = invoke(BASE_ENV, conf(**bad))
    assert out["code"] == 7


@pytest.mark.parametrize(
    "command,version,allowed",
    [
        ("CHECK", "0.3.1", False),
        ("CHECK", "0.4.0", True),
        ("STATUS", "1.0.0", False),
        ("STATUS", "1.1.0", True),
        ("GC", "1.0.0", False),
        ("GC", "1.1.0", True),
    ],
)
def test_version_gates(command: str, version: str, allowed: bool) -> None:
    rc, out = invoke(dict(BASE_ENV, CNI_COMMAND=command), conf(version))
    assert (rc == 0) is allowed
    if not allowed:
        assert out["code"] == 1 and command in out["msg"]


def test_version_lists_supported_in_callers_version() -> None:
    rc, out = invoke({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.4.0"}')
    assert rc == 0
    assert out == {"cniVersion": "0.4.0", "supportedVersions": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]}


def test_typed_error_keeps_its_code_and_unknown_error_is_999() -> None:
    rc, out = invoke(BASE_ENV, conf(), RecordingPlugin(CniError(11, "later", "why")))
    assert (rc, out["code"], out["msg"], out["details"]) == (1, 11, "later", "why")
    rc, out = invoke(BASE_ENV, conf(), RecordingPlugin(RuntimeError("boom")))
    assert rc == 1 and out["code"] == 999 and "boom" in out["details"]
    assert out["cniVersion"] == "1.0.0"


def test_malformed_cni_args() -> None:
    rc, out = invoke(dict(BASE_ENV, CNI_ARGS="K8S_POD_NAME"), conf())
    assert out["code"] == 4 and "CNI_ARGS" in out["msg"]
