"""IPAM delegation per the CNI spec: run `ipam.type` from CNI_PATH.

The delegate gets the same environment (with CNI_COMMAND set) and the whole
network configuration on stdin. When the network has no `ipam` section, Sluice
uses host-local on the node's podCIDR (`default_ipam`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from cni.node import gateway_ip
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
        ranges.append([{"subnet": str(net), "gateway": str(gateway_ip(cidr))}])
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
    try:
        rc, stdout, stderr = run_delegate(str(binary), json.dumps(conf).encode(), child_env)
    except TimeoutError as exc:
        raise CniError(ERR_IPAM, f"ipam plugin {ipam['type']} {command}: {exc}") from exc
    if rc != 0:
        raise _delegate_error(ipam["type"], command, stdout, stderr)
    if command != "ADD":
        return None
    try:
        data = json.loads(stdout)
    except ValueError as exc:
        raise CniError(ERR_IPAM, f"ipam plugin {ipam['type']} returned invalid JSON") from exc
    result = parse_result(data, f"{ipam['type']} result")
    if not result.ips:
        raise CniError(ERR_IPAM, f"ipam plugin {ipam['type']} returned no IP")
    return result


def run_delegate(
    binary: str, stdin: bytes, env: Mapping[str, str], timeout: float = _TIMEOUT
) -> tuple[int, bytes, bytes]:
    """Run `binary` with `env` and `stdin`; return (exit status, stdout, stderr).

    Raises TimeoutError (after killing it) when it runs longer than `timeout`.

    # why: subprocess.run's communicate() loop wakes up, and takes the interpreter
    # lock, for every step; inside the controller each wakeup can wait for its
    # other threads. Here stdin is written at once, stderr goes to a memory file
    # read at the end, and only stdout is read as it comes.
    """
    deadline = time.monotonic() + timeout
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err = os.memfd_create("cni-delegate-stderr", os.MFD_CLOEXEC)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1)]
        actions.append((os.POSIX_SPAWN_DUP2, err, 2))
        pid = os.posix_spawn(binary, [binary], dict(env), file_actions=actions)
    except BaseException:
        for fd in (in_w, out_r, err):
            os.close(fd)
        raise
    finally:
        os.close(in_r)
        os.close(out_w)
    try:
        stdout = _exchange(in_w, stdin, out_r, deadline, pid)
        status = os.waitpid(pid, 0)[1]
        return os.waitstatus_to_exitcode(status), stdout, os.pread(err, 65536, 0)
    finally:
        os.close(out_r)
        os.close(err)


def _exchange(in_w: int, data: bytes, out_r: int, deadline: float, pid: int) -> bytes:
    """Write `data` to `in_w` (closing it when done) while reading `out_r` to EOF.

    Kills `pid` and raises TimeoutError past `deadline`. A configuration fits in
    the pipe, so the write normally completes at once, before the first read.
    """
    os.set_blocking(in_w, False)
    poller = select.poll()
    poller.register(out_r, select.POLLIN)
    todo, writing = memoryview(data), True
    chunks: list[bytes] = []
    try:
        while True:
            if writing:
                todo, writing = _write_some(in_w, todo)
                if writing:
                    poller.register(in_w, select.POLLOUT)
                else:
                    with contextlib.suppress(KeyError):
                        poller.unregister(in_w)
                    os.close(in_w)
            left = deadline - time.monotonic()
            events = dict(poller.poll(left * 1000)) if left > 0 else {}
            if not events:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise TimeoutError("no answer in time, killed")
            if out_r in events:
                chunk = os.read(out_r, 65536)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
    finally:
        if writing:
            os.close(in_w)


def _write_some(fd: int, todo: memoryview) -> tuple[memoryview, bool]:
    """Write what the pipe takes now; (the rest, whether there is more to write)."""
    try:
        while todo:
            todo = todo[os.write(fd, todo) :]
    except BlockingIOError:
        return todo, True
    except BrokenPipeError:
        pass  # the delegate did not read its input; its answer says why
    return todo[:0], False


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
