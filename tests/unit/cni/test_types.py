"""Results render per spec version and parse back."""

from __future__ import annotations

import ipaddress

import pytest

from cni import ipam, node
from cni.types import CniError, Interface, IPConfig, Result, Route, parse_result


def sample() -> Result:
    return Result(
        interfaces=[
            Interface("pod-1234", "aa:bb:cc:dd:ee:01", mtu=1450),
            Interface("eth0", "aa:bb:cc:dd:ee:02", sandbox="/run/netns/x", mtu=1450),
        ],
        ips=[
            IPConfig(ipaddress.ip_interface("10.244.1.5/24"), ipaddress.ip_address("10.244.1.1"), 1)
        ],
        routes=[Route(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_address("10.244.1.1"))],
        dns={"nameservers": ["10.96.0.10"]},
    )


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0"])
def test_old_versions_carry_ip_version(version: str) -> None:
    out = sample().to_json(version)
    assert out["cniVersion"] == version
    assert out["ips"] == [
        {"version": "4", "address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 1}
    ]
    assert "mtu" not in out["interfaces"][1]


def test_v1_drops_ip_version_and_v11_adds_mtu() -> None:
    v10 = sample().to_json("1.0.0")
    assert "version" not in v10["ips"][0] and "mtu" not in v10["interfaces"][0]
    v11 = sample().to_json("1.1.0")
    assert v11["interfaces"][1] == {
        "name": "eth0",
        "mac": "aa:bb:cc:dd:ee:02",
        "sandbox": "/run/netns/x",
        "mtu": 1450,
    }
    assert v11["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}]


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_round_trip(version: str) -> None:
    parsed = parse_result(sample().to_json(version), "prevResult")
    assert parsed.ips == sample().ips and parsed.routes == sample().routes
    assert [i.name for i in parsed.interfaces] == ["pod-1234", "eth0"]


def test_malformed_prev_result_is_code_6() -> None:
    with pytest.raises(CniError) as err:
        parse_result({"ips": [{"address": "nonsense"}]}, "prevResult")
    assert err.value.code == 6 and "prevResult" in err.value.msg


def test_host_ifname_is_stable_short_and_distinct() -> None:
    a = node.host_ifname("abc123", "eth0", "nginx-deployment-xyz")
    assert a == node.host_ifname("abc123", "eth0", "nginx-deployment-xyz")
    assert len(a) <= 15 and a.startswith("nginxd-")
    assert a != node.host_ifname("abc124", "eth0", "nginx-deployment-xyz")
    assert a != node.host_ifname("abc123", "net1", "nginx-deployment-xyz")
    assert node.host_ifname("abc", "eth0", "").startswith("sl-")


def test_alias_round_trip() -> None:
    alias = node.link_alias("cid", "eth0")
    assert node.parse_alias(alias) == ("cid", "eth0")
    assert node.parse_alias("something else") is None


def test_pod_mtu_subtracts_tunnel_overhead_in_overlay_only() -> None:
    assert node.pod_mtu(1500, "overlay", "vxlan") == 1450
    assert node.pod_mtu(1500, "overlay", "geneve") == 1450
    assert node.pod_mtu(9000, "routing", "vxlan") == 9000


def test_default_ipam_uses_first_ip_as_gateway() -> None:
    conf = ipam.default_ipam(["10.244.3.0/24"], "/var/lib/sluice/ipam")
    assert conf == {
        "type": "host-local",
        "ranges": [[{"subnet": "10.244.3.0/24", "gateway": "10.244.3.1"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "/var/lib/sluice/ipam",
    }
