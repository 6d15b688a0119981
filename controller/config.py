"""sluice-controller configuration: YAML, validated where it is loaded.

Unknown keys are rejected with their dotted path; every value is type-checked.
`python -m controller.config check FILE` runs the same parser offline.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(Exception):
    """The configuration is invalid; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CniSection(_Strict):
    """Where the CNI server listens and keeps its state."""

    server_socket: str = Field("/run/sluice/cni.sock", alias="serverSocket")
    state_dir: str = Field("/var/lib/sluice", alias="stateDir")
    bin_dir: str = Field("/opt/cni/bin", alias="binDir")
    conf_dir: str = Field("/etc/cni/net.d", alias="confDir")


class OpenFlowSection(_Strict):
    """Where the os-ken app listens for br-int."""

    listen_host: str = Field("127.0.0.1", alias="listenHost")
    port: int = Field(6653, ge=1, le=65535)


class RestSection(_Strict):
    """The REST API's listen address (loopback by default)."""

    host: str = "127.0.0.1"
    port: int = Field(9595, ge=0, le=65535)


class Config(_Strict):
    """The whole controller configuration (docs/configuration.md)."""

    node_name: str | None = Field(None, alias="nodeName")
    mode: Literal["overlay", "routing", "underlay", "hybrid"] = "overlay"
    tunnel_type: Literal["vxlan", "geneve"] = Field("vxlan", alias="tunnelType")
    bridge: str = "br-int"
    datapath_type: Literal["auto", "netdev", "system"] = Field("auto", alias="datapathType")
    ovsdb: str = "unix:/var/run/openvswitch/db.sock"
    kubeconfig: str | None = None
    node_ip: str | None = Field(None, alias="nodeIP")
    pod_cidr: str | None = Field(None, alias="podCIDR")
    cluster_cidr: str = Field("10.244.0.0/16", alias="clusterCIDR")
    service_cidr: str = Field("10.96.0.0/12", alias="serviceCIDR")
    uplink_interface: str | None = Field(None, alias="uplinkInterface")
    mtu: int | None = Field(None, ge=576, le=65535)
    cni: CniSection = CniSection()  # type: ignore[call-arg]
    openflow: OpenFlowSection = OpenFlowSection()  # type: ignore[call-arg]
    rest: RestSection = RestSection()  # type: ignore[call-arg]
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", alias="logLevel")

    @field_validator("node_ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_address(value)
        return value

    @field_validator("pod_cidr", "cluster_cidr", "service_cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_network(value)  # raises ValueError naming the value
        return value


def _check_cidrs(cfg: Config) -> None:
    if cfg.pod_cidr is None:
        return
    pod, cluster = ipaddress.ip_network(cfg.pod_cidr), ipaddress.ip_network(cfg.cluster_cidr)
    if pod.version != cluster.version or not pod.subnet_of(cluster):  # type: ignore[arg-type]
        raise ConfigError(f"podCIDR: {pod} is not inside clusterCIDR {cluster}")


def parse(data: Any) -> Config:
    """Validate a decoded YAML document; ConfigError names the offending key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("configuration must be a mapping")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
    _check_cidrs(cfg)
    return cfg


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where}: {what}")
    return "; ".join(parts)


def load(path: str | Path) -> Config:
    """Read and validate the YAML file at `path`."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return parse(data)


def main(argv: list[str]) -> int:
    """`check FILE`: validate a configuration file offline."""
    if len(argv) != 2 or argv[0] != "check":
        print("usage: python -m controller.config check FILE", file=sys.stderr)
        return 2
    try:
        load(argv[1])
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
