"""ADD/CHECK/DEL per CNI spec version, and chaining with Debian's portmap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.cninode import CniNode, in_netns, ip

pytestmark = pytest.mark.integration


def assert_result_shape(res: dict[str, Any], version: str, sandbox: str) -> None:
    """Structural checks of a result against the spec of `version`."""
    assert res["cniVersion"] == version
    assert set(res) <= {"cniVersion", "interfaces", "ips", "routes", "dns"}
    for iface in res["interfaces"]:
        allowed = {"name", "mac", "sandbox"} | ({"mtu"} if version == "1.1.0" else set())
        assert set(iface) <= allowed and iface["name"] and len(iface["mac"]) == 17
    assert res["interfaces"][1]["sandbox"] == sandbox
    for addr in res["ips"]:
        if version in ("0.3.1", "0.4.0"):
            assert addr["version"] == "4"
        else:
            assert "version" not in addr
        assert res["interfaces"][addr["interface"]]["sandbox"] == sandbox
    if version == "1.1.0":
        assert res["interfaces"][1]["mtu"] == 1450


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_add_check_del_per_version(
    cni_node: CniNode, pod_netns: Callable[[], str], version: str
) -> None:
    ns = pod_netns()
    args = cni_node.pod_args("v")
    rc, res = cni_node.cni("ADD", cni_node.conf(version), "cid-v", ns, cni_args=args)
    assert rc == 0, res
    assert_result_shape(res, version, ns)
    with_prev = cni_node.conf(version, prevResult=res)
    rc, out = cni_node.cni("CHECK", with_prev, "cid-v", ns, cni_args=args)
    assert (rc, out) == ((0, {}) if version != "0.3.1" else (1, out))
    if version == "0.3.1":
        assert out["code"] == 1  # CHECK arrived with 0.4.0
    del_conf = with_prev if version != "0.3.1" else cni_node.conf(version)
    assert cni_node.cni("DEL", del_conf, "cid-v", ns, cni_args=args) == (0, {})
    assert cni_node.pod_ports() == [] and cni_node.leases() == []


def test_version_lists_all(cni_node: CniNode) -> None:
    rc, out = cni_node.cni("VERSION", {"cniVersion": "1.1.0"})
    assert rc == 0
    assert out == {"cniVersion": "1.1.0", "supportedVersions": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]}


def test_check_names_what_is_wrong(cni_node: CniNode, pod_netns: Callable[[], str]) -> None:
    ns = pod_netns()
    rc, res = cni_node.cni("ADD", cni_node.conf(), "cid-c", ns)
    assert rc == 0
    conf = cni_node.conf(prevResult=res)
    pod = ns.rsplit("/", 1)[1]
    addr = res["ips"][0]["address"]
    ip("-n", pod, "addr", "del", addr, "dev", "eth0")
    rc, out = cni_node.cni("CHECK", conf, "cid-c", ns)
    assert rc == 1 and out["code"] == 104 and addr in out["msg"]
    cni_node.ovs.vsctl("del-port", "br-int", res["interfaces"][0]["name"])
    ip("-n", pod, "addr", "add", addr, "dev", "eth0")
    ip("-n", pod, "route", "add", "default", "via", "10.250.1.1", "dev", "eth0")
    rc, out = cni_node.cni("CHECK", conf, "cid-c", ns)
    assert out["code"] == 104 and "no OVS port" in out["msg"]
    assert cni_node.cni("DEL", conf, "cid-c", ns) == (0, {})


def test_chained_portmap_receives_and_extends_result(
    cni_node: CniNode, pod_netns: Callable[[], str]
) -> None:
    ns = pod_netns()
    rc, res = cni_node.cni("ADD", cni_node.conf(), "cid-pm", ns)
    assert rc == 0
    pm_conf = {
        "cniVersion": "1.0.0",
        "name": "sluice",
        "type": "portmap",
        "capabilities": {"portMappings": True},
        "runtimeConfig": {
            "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]
        },
        "prevResult": res,
    }
    rc, out = cni_node.cni("ADD", pm_conf, "cid-pm", ns, plugin="portmap")
    assert rc == 0, out
    assert out["interfaces"] == res["interfaces"] and out["ips"] == res["ips"]
    assert "18080" in cni_node_iptables(cni_node)
    assert cni_node.cni("DEL", pm_conf, "cid-pm", ns, plugin="portmap")[0] == 0
    assert cni_node.cni("DEL", cni_node.conf(prevResult=res), "cid-pm", ns) == (0, {})


def cni_node_iptables(node: CniNode) -> str:
    return in_netns(node.name, "iptables-save", "-t", "nat").stdout


def test_prev_result_is_preserved_when_chained(
    cni_node: CniNode, pod_netns: Callable[[], str]
) -> None:
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "net0", "mac": "02:00:00:00:00:01", "sandbox": "/x"}],
        "ips": [{"address": "192.0.2.10/24", "interface": 0}],
        "dns": {"nameservers": ["192.0.2.53"]},
    }
    ns = pod_netns()
    rc, res = cni_node.cni("ADD", cni_node.conf(prevResult=prev), "cid-ch", ns)
    assert rc == 0, res
    assert res["interfaces"][0] == prev["interfaces"][0]
    assert res["ips"][0] == prev["ips"][0] and res["ips"][1]["interface"] == 2
    assert res["dns"] == {"nameservers": ["192.0.2.53"]}
    assert cni_node.cni("DEL", cni_node.conf(), "cid-ch", ns) == (0, {})
