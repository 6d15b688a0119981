"""IPAM delegation per the CNI spec: run `ipam.type` from CNI_PATH.

The delegate gets the same environment (with CNI_COMMAND set) and the whole
network configuration on stdin. When the network has no `ipam` section, Sluice
uses host-local on the node's podCIDR (`default_ipam`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from cni.types import (
    ERR_INVALID_CONFIG,
    ERR_IPAM,
    SUPPORTED_VERSIONS,
    CniError,
    Result,
    parse_result,
    version_at_least,
)

_TIMEOUT = 60.0
# why: a delegate's well-known codes mean the same to our caller; codes >= 100 and
# 999 are the delegate's own and would be misread as ours, so they become ERR_IPAM.
_PASS_THROUGH = frozenset({1, 2, 3, 4, 5, 6, 7, 11})


def default_ipam(subnets: Sequence[str], data_dir: str) -> dict[str, Any]:
    """host-local on the node's podCIDR(s); gateway = first IP; default route per family."""
    ranges = []
    routes = []
    for cidr in subnets:
        net = ipaddress.ip_network(cidr)
        ranges.append([{"subnet": str(net), "gateway": str(net.network_address + 1)}])
        routes.append({"dst": "0.0.0.0/0" if net.version == 4 else "::/0"})
    return {"type": "host-local", "ranges": ranges, "routes": routes, "dataDir": data_dir}


def find_plugin(name: str, path: Sequence[str]) -> Path:
    """Locate plugin `name` in the CNI_PATH directories; code 7 when absent."""
    if not name or "/" in name:
        raise CniError(ERR_INVALID_CONFIG, "ipam.type must be a plugin name", repr(name))
    for directory in path:
        candidate = Path(directory) / name
        if os.access(candidate, os.X_OK):
            return candidate
    raise CniError(
        ERR_INVALID_CONFIG, f"ipam plugin {name!r} not found in CNI_PATH", ":".join(path)
    )


@lru_cache(maxsize=32)
def _plugin_versions(binary: str, mtime: float) -> tuple[str, ...]:
    proc = subprocess.run(
        [binary],
        input=b'{"cniVersion":"0.4.0"}',
        env={"CNI_COMMAND": "VERSION"},
        capture_output=True,
        timeout=_TIMEOUT,
        check=False,
    )
    try:
        return tuple(json.loads(proc.stdout)["supportedVersions"])
    except (ValueError, KeyError, TypeError):
        return ()


def delegate_version(binary: Path, wanted: str) -> str:
    """The highest version <= `wanted` that both Sluice and the delegate speak.

    # why: Debian's host-local speaks up to 1.0.0; a 1.1.0 network must still work.
    """
    theirs = set(_plugin_versions(str(binary), binary.stat().st_mtime))
    common = [v for v in SUPPORTED_VERSIONS if v in theirs and version_at_least(wanted, v)]
    return common[-1] if common else wanted


def run_ipam(
    command: str,
    netconf: Mapping[str, Any],
    env: Mapping[str, str],
    path: Sequence[str],
) -> Result | None:
    """Run the IPAM delegate for `command`; return its result for ADD, else None."""
    ipam = netconf.get("ipam") or {}
    binary = find_plugin(str(ipam.get("type", "")), path)
    conf = dict(netconf)
    conf["cniVersion"] = delegate_version(binary, str(netconf["cniVersion"]))
    conf.pop("prevResult", None)
    child_env = dict(env)
    child_env["CNI_COMMAND"] = command
    proc = subprocess.run(
        [str(binary)],
        input=json.dumps(conf).encode(),
        env=child_env,
        capture_output=True,
        timeout=_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise _delegate_error(ipam["type"], command, proc.stdout, proc.stderr)
    if command != "ADD":
        return None
    try:
        data = json.loads(proc.stdout)
    except ValueError as exc:
        raise CniError(ERR_IPAM, f"ipam plugin {ipam['type']} returned invalid JSON") from exc
    result = parse_result(data, f"{ipam['type']} result")
    if not result.ips:
        raise CniError(ERR_IPAM, f"ipam plugin {ipam['type']} returned no IP")
    return result


def _delegate_error(name: str, command: str, stdout: bytes, stderr: bytes) -> CniError:
    try:
        data = json.loads(stdout)
        code, msg = int(data.get("code", 999)), str(data.get("msg", ""))
        details = str(data.get("details", ""))
    except (ValueError, AttributeError, TypeError):
        code, msg, details = 999, stdout.decode(errors="replace").strip(), ""
    text = f"ipam plugin {name} {command} failed: {msg}"
    tail = details or stderr.decode(errors="replace").strip()
    return CniError(code if code in _PASS_THROUGH else ERR_IPAM, text, tail)
