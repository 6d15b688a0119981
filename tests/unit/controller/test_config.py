"""Controller configuration: defaults, and every rejection names its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from controller import config
from controller.config import ConfigError


def test_defaults() -> None:
    cfg = config.parse({})
    assert (cfg.mode, cfg.tunnel_type, cfg.bridge, cfg.datapath_type) == (
        "overlay",
        "vxlan",
        "br-int",
        "auto",
    )
    assert cfg.cni.server_socket == "/run/sluice/cni.sock" and cfg.rest.host == "127.0.0.1"


def test_camel_case_keys_map_to_fields() -> None:
    cfg = config.parse(
        {
            "nodeName": "n1",
            "podCIDR": "10.244.1.0/24",
            "nodeIP": "192.0.2.1",
            "cni": {"serverSocket": "/x.sock"},
            "openflow": {"listenHost": "::1"},
        }
    )
    assert cfg.node_name == "n1" and cfg.pod_cidr == "10.244.1.0/24"
    assert cfg.cni.server_socket == "/x.sock" and cfg.openflow.listen_host == "::1"


@pytest.mark.parametrize(
    "data,key",
    [
        ({"modee": "overlay"}, "modee"),
        ({"cni": {"socket": "/x"}}, "cni.socket"),
        ({"rest": {"bind": "x"}}, "rest.bind"),
        ({"mode": "bgp"}, "mode"),
        ({"tunnelType": "gre"}, "tunnelType"),
        ({"datapathType": "dpdk"}, "datapathType"),
        ({"podCIDR": "10.0.0.0/33"}, "podCIDR"),
        ({"podCIDR": "10.0.0.1/24"}, "podCIDR"),
        ({"clusterCIDR": "nonsense"}, "clusterCIDR"),
        ({"nodeIP": "1.2.3"}, "nodeIP"),
        ({"mtu": 100}, "mtu"),
        ({"mtu": "big"}, "mtu"),
        ({"openflow": {"port": 0}}, "openflow.port"),
        ({"rest": {"port": 70000}}, "rest.port"),
        ({"logLevel": "chatty"}, "logLevel"),
        ({"podCIDR": "10.9.0.0/24", "clusterCIDR": "10.244.0.0/16"}, "podCIDR"),
    ],
)
def test_rejections_name_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.parse(data)
    assert str(err.value).startswith(key)


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigError):
        config.parse(["mode"])


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump({"mode": "overlay"}))
    bad.write_text(yaml.safe_dump({"mdoe": "overlay"}))
    assert config.main(["check", str(good)]) == 0
    assert config.main(["check", str(bad)]) == 1
    assert "mdoe: unknown key" in capsys.readouterr().err
    assert config.main(["check", str(tmp_path / "missing.yaml")]) == 1
    assert config.main(["frob"]) == 2
