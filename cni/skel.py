"""The CNI protocol: environment checks, version gates, dispatch, JSON errors.

`run(env, stdin, stdout, plugin)` is the whole protocol with its edges injected,
so tests pass a dict, bytes and a StringIO. It never raises: typed `CniError`s
become the spec's error JSON, anything else becomes code 999.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from cni import config
from cni.config import NetConf
from cni.types import (
    ERR_INCOMPATIBLE_VERSION,
    ERR_INTERNAL,
    ERR_INVALID_CONFIG,
    ERR_INVALID_ENV,
    LATEST_VERSION,
    SUPPORTED_VERSIONS,
    CniError,
    version_at_least,
)

LOG = logging.getLogger(__name__)

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
# Required environment per command (CNI_COMMAND itself is always required).
_REQUIRED_ENV: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
    "VERSION": (),
}
_MIN_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_BAD_IFNAME_CHARS = re.compile(r"[/:\s]")


@dataclass(frozen=True)
class CmdArgs:
    """The validated invocation: the CNI_* variables and the raw stdin."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]
    path: tuple[str, ...]
    stdin: bytes
    env: Mapping[str, str] = field(repr=False)


class Plugin(Protocol):
    """What a CNI plugin implements; `add` returns the result object to print."""

    def add(self, args: CmdArgs, conf: NetConf) -> dict[str, Any]: ...
    def delete(self, args: CmdArgs, conf: NetConf) -> None: ...
    def check(self, args: CmdArgs, conf: NetConf) -> None: ...
    def status(self, args: CmdArgs, conf: NetConf) -> None: ...
    def gc(self, args: CmdArgs, conf: NetConf) -> None: ...


def run(env: Mapping[str, str], stdin: bytes, stdout: TextIO, plugin: Plugin) -> int:
    """Execute one CNI invocation; write the result or error JSON; return the exit code."""
    version = _best_effort_version(stdin)
    try:
        args = parse_env(env, stdin)
        if args.command == "VERSION":
            json.dump(version_info(stdin), stdout)
            return 0
        return _dispatch(args, plugin, stdout)
    except CniError as err:
        LOG.info("CNI %s failed: %s", env.get("CNI_COMMAND", "?"), err)
        json.dump(err.to_json(version), stdout)
        return 1
    except Exception as exc:  # noqa: BLE001 — the boundary: unknown errors are code 999
        LOG.exception("CNI %s: internal error", env.get("CNI_COMMAND", "?"))
        json.dump(CniError(ERR_INTERNAL, "internal error", repr(exc)).to_json(version), stdout)
        return 1


def _dispatch(args: CmdArgs, plugin: Plugin, stdout: TextIO) -> int:
    conf = config.parse(args.stdin)
    minimum = _MIN_VERSION.get(args.command)
    if minimum and not version_at_least(conf.cni_version, minimum):
        raise CniError(
            ERR_INCOMPATIBLE_VERSION,
            f"cniVersion {conf.cni_version} does not allow {args.command}",
            f"{args.command} needs cniVersion >= {minimum}",
        )
    _validate_name(conf.name)
    if args.command == "ADD":
        json.dump(plugin.add(args, conf), stdout)
    elif args.command == "DEL":
        plugin.delete(args, conf)
    elif args.command == "CHECK":
        plugin.check(args, conf)
    elif args.command == "STATUS":
        plugin.status(args, conf)
    else:
        plugin.gc(args, conf)
    return 0


def parse_env(env: Mapping[str, str], stdin: bytes) -> CmdArgs:
    """Validate the CNI_* environment for its command; code 4 names what is wrong."""
    command = env.get("CNI_COMMAND", "")
    if not command:
        raise CniError(ERR_INVALID_ENV, "required environment variable CNI_COMMAND is missing")
    if command not in _REQUIRED_ENV:
        raise CniError(ERR_INVALID_ENV, f"unknown CNI_COMMAND {command!r}")
    missing = [name for name in _REQUIRED_ENV[command] if not env.get(name)]
    if missing:
        raise CniError(
            ERR_INVALID_ENV, "required environment variables missing: " + ",".join(missing)
        )
    container_id = env.get("CNI_CONTAINERID", "")
    ifname = env.get("CNI_IFNAME", "")
    if container_id and not _NAME_RE.match(container_id):
        raise CniError(ERR_INVALID_ENV, "CNI_CONTAINERID has invalid characters", container_id)
    if ifname:
        _validate_ifname(ifname)
    return CmdArgs(
        command=command,
        container_id=container_id,
        netns=env.get("CNI_NETNS", ""),
        ifname=ifname,
        args=config.parse_cni_args(env.get("CNI_ARGS", "")),
        path=tuple(p for p in env.get("CNI_PATH", "").split(":") if p),
        stdin=stdin,
        env=env,
    )


def _validate_ifname(ifname: str) -> None:
    if len(ifname) > 15 or ifname in (".", "..") or _BAD_IFNAME_CHARS.search(ifname):
        raise CniError(ERR_INVALID_ENV, "CNI_IFNAME is not a valid interface name", ifname)


def _validate_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise CniError(ERR_INVALID_CONFIG, "network name has invalid characters", name)


def version_info(stdin: bytes) -> dict[str, Any]:
    """The VERSION answer, in the caller's cniVersion when Sluice speaks it."""
    return {
        "cniVersion": _best_effort_version(stdin),
        "supportedVersions": list(SUPPORTED_VERSIONS),
    }


def _best_effort_version(stdin: bytes) -> str:
    try:
        version = json.loads(stdin or b"{}").get("cniVersion")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return LATEST_VERSION
    return version if version in SUPPORTED_VERSIONS else LATEST_VERSION
