"""Network configuration and CNI_ARGS parsing, validated where they are loaded.

Unknown top-level keys are rejected with their name (spec code 2); wrong types
or values are rejected naming the key (code 7).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cni.types import (
    ERR_DECODE,
    ERR_INCOMPATIBLE_VERSION,
    ERR_INVALID_CONFIG,
    ERR_INVALID_ENV,
    ERR_UNSUPPORTED_FIELD,
    SUPPORTED_VERSIONS,
    CniError,
    Result,
    parse_result,
)

DEFAULT_SERVER_SOCKET = "/run/sluice/cni.sock"
DEFAULT_STATE_DIR = "/var/lib/sluice"

# Keys the spec or the runtime may put into any plugin's configuration.
_SPEC_KEYS = frozenset(
    {"cniVersion", "cniVersions", "name", "type", "ipam", "dns", "args", "runtimeConfig"}
    | {"prevResult", "capabilities", "disableCheck", "disableGC"}
    | {"cni.dev/valid-attachments", "cni.dev/attachments"}
)
# Keys of Sluice's own plugin configuration (docs/cni.md).
_SLUICE_KEYS = frozenset({"serverSocket", "stateDir", "mtu"})
_MIN_MTU, _MAX_MTU = 576, 65535


@dataclass(frozen=True)
class NetConf:
    """The plugin's view of its network configuration (one plugin of a conflist)."""

    cni_version: str
    name: str
    ipam: dict[str, Any] | None
    dns: dict[str, Any]
    mtu: int | None
    server_socket: str
    state_dir: str
    prev_result: Result | None
    prev_result_raw: dict[str, Any] | None
    runtime_config: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)


def decode(stdin: bytes) -> dict[str, Any]:
    """Decode the configuration JSON; code 6 when it is not a JSON object."""
    try:
        data = json.loads(stdin or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CniError(ERR_DECODE, "network configuration is not valid JSON", str(exc)) from exc
    if not isinstance(data, dict):
        raise CniError(ERR_DECODE, "network configuration is not a JSON object")
    return data


def check_version(data: dict[str, Any]) -> str:
    """Return the config's cniVersion; code 1 when Sluice does not speak it."""
    version = data.get("cniVersion", "0.1.0")
    if not isinstance(version, str):
        raise CniError(ERR_DECODE, "cniVersion must be a string")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            ERR_INCOMPATIBLE_VERSION,
            f"unsupported cniVersion {version!r}",
            "supported: " + ", ".join(SUPPORTED_VERSIONS),
        )
    return version


def parse(stdin: bytes) -> NetConf:
    """Parse and validate a plugin configuration from the runtime's stdin."""
    data = decode(stdin)
    version = check_version(data)
    unknown = sorted(set(data) - _SPEC_KEYS - _SLUICE_KEYS)
    if unknown:
        first = unknown[0]
        raise CniError(
            ERR_UNSUPPORTED_FIELD,
            f"unknown configuration key {first!r}",
            f"{first}={data[first]!r}",
        )
    name = _require_str(data, "name")
    prev_raw = data.get("prevResult")
    return NetConf(
        cni_version=version,
        name=name,
        ipam=_optional_dict(data, "ipam"),
        dns=_optional_dict(data, "dns") or {},
        mtu=_mtu(data),
        server_socket=_optional_str(data, "serverSocket") or DEFAULT_SERVER_SOCKET,
        state_dir=_optional_str(data, "stateDir") or DEFAULT_STATE_DIR,
        prev_result=parse_result(prev_raw, "prevResult") if prev_raw is not None else None,
        prev_result_raw=prev_raw if isinstance(prev_raw, dict) else None,
        runtime_config=_optional_dict(data, "runtimeConfig") or {},
        raw=data,
    )


def _require_str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise CniError(ERR_INVALID_CONFIG, f"missing or empty string field {key!r}")
    return value


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise CniError(ERR_INVALID_CONFIG, f"field {key!r} must be a non-empty string")
    return value


def _optional_dict(data: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = data.get(key)
    if value is not None and not isinstance(value, dict):
        raise CniError(ERR_INVALID_CONFIG, f"field {key!r} must be an object")
    return value


def _mtu(data: dict[str, Any]) -> int | None:
    value = data.get("mtu")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not _MIN_MTU <= value <= _MAX_MTU:
        raise CniError(ERR_INVALID_CONFIG, f"field 'mtu' must be an integer {_MIN_MTU}..{_MAX_MTU}")
    return value


def parse_cni_args(raw: str) -> dict[str, str]:
    """Parse CNI_ARGS ("K=V;K2=V2", any order) into a dict; code 4 when malformed."""
    out: dict[str, str] = {}
    for item in filter(None, raw.split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CniError(ERR_INVALID_ENV, "CNI_ARGS is malformed", f"item {item!r} is not K=V")
        out[key] = value
    return out
