"""ADD's netlink work against real namespaces: the veth, the pod interface, DEL's delete.

A scratch "host" netns stands in for the node, so nothing touches the machine's own.
Every check reads the result back with iproute2, not with the code under test.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from cni import netns, nlbatch
from tests.integration.cninode import in_netns, ip
from tests.integration.cninode import netns as scratch_netns

pytestmark = pytest.mark.integration

HOST_END = "slt-h0"


@pytest.fixture
def spaces() -> Iterator[tuple[str, str]]:
    """(host netns, pod netns) names, removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with scratch_netns("sltnh-") as host, scratch_netns("sltnp-") as pod:
        yield host, pod


@contextmanager
def plugged(host: str, pod: str, mtu: int = 1400) -> Iterator[tuple[Any, netns.PodNetns, Any]]:
    """Inside `host`: an nlbatch socket, the open pod netns and ensure_veth's result."""
    with (
        netns.entered(f"/run/netns/{host}"),
        nlbatch.open_socket() as sock,
        netns.PodNetns(f"/run/netns/{pod}") as pod_ns,
    ):
        veth = netns.ensure_veth(sock, pod_ns, HOST_END, "eth0", mtu, "sluice/cid/eth0")
        yield sock, pod_ns, veth


def link(ns: str, name: str) -> dict[str, Any]:
    """`ip -d -j link show NAME` in `ns`."""
    (info,) = json.loads(ip("-n", ns, "-d", "-j", "link", "show", name).stdout)
    return dict(info)


def sysctl(ns: str, path: str) -> str:
    return in_netns(ns, "cat", f"/proc/sys/net/{path}").stdout.strip()


def test_veth_peer_lands_in_pod_and_host_end_is_isolated(spaces: tuple[str, str]) -> None:
    host, pod = spaces
    with plugged(host, pod) as (_, _, veth):
        pass
    host_end, pod_end = link(host, HOST_END), link(pod, "eth0")
    assert host_end["address"] == veth.host_mac and pod_end["address"] == veth.peer_mac
    assert pod_end["ifindex"] == veth.peer_index
    assert host_end["mtu"] == pod_end["mtu"] == 1400
    assert host_end["linkinfo"]["info_kind"] == "veth"
    assert host_end["ifalias"] == "sluice/cid/eth0"
    assert "UP" in host_end["flags"] and "UP" not in pod_end["flags"]
    assert sysctl(host, f"ipv4/conf/{HOST_END}/arp_ignore") == "8"
    assert sysctl(host, f"ipv4/conf/{HOST_END}/forwarding") == "0"
    assert sysctl(host, f"ipv6/conf/{HOST_END}/disable_ipv6") == "1"


def test_macs_are_unicast_and_locally_administered() -> None:
    for _ in range(64):
        first = int(netns.random_mac().split(":")[0], 16)
        assert first & 0x01 == 0 and first & 0x02 == 2


def test_stale_host_end_is_replaced(spaces: tuple[str, str]) -> None:
    host, pod = spaces
    ip("-n", host, "link", "add", HOST_END, "type", "veth", "peer", "name", "stale0")
    with plugged(host, pod) as (_, _, veth):
        pass
    assert link(host, HOST_END)["address"] == veth.host_mac
    assert ip("-n", host, "link", "show", "stale0", check=False).returncode != 0
    assert link(pod, "eth0")["address"] == veth.peer_mac


def test_taken_pod_name_fails_with_eexist_and_leaves_no_host_end(spaces: tuple[str, str]) -> None:
    host, pod = spaces
    ip("-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
    with pytest.raises(NetlinkError) as err, plugged(host, pod):
        pass
    assert err.value.code == errno.EEXIST and "create link" in str(err.value)
    assert ip("-n", host, "link", "show", HOST_END, check=False).returncode != 0


def test_pod_interface_gets_addresses_routes_and_comes_up(spaces: tuple[str, str]) -> None:
    host, pod = spaces
    ip("-n", pod, "link", "set", "lo", "down")
    addrs = [ipaddress.ip_interface("10.250.9.5/24"), ipaddress.ip_interface("fd00:9::5/64")]
    routes = [
        (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_address("10.250.9.1")),
        (ipaddress.ip_network("10.99.0.0/16"), None),
        (ipaddress.ip_network("::/0"), ipaddress.ip_address("fd00:9::1")),
    ]
    gw_mac = "0a:58:0a:fa:09:01"
    with plugged(host, pod) as (_, pod_ns, veth):
        netns.bring_up_pod_interface(pod_ns, veth.peer_index)
        netns.configure_pod_interface(
            pod_ns, veth.peer_index, addrs, routes, [(routes[0][1], gw_mac)]
        )
    assert "UP" in link(pod, "lo")["flags"] and "UP" in link(pod, "eth0")["flags"]
    neigh = json.loads(ip("-n", pod, "-j", "neigh", "show", "dev", "eth0").stdout)
    assert [(n["dst"], n["lladdr"], n["state"]) for n in neigh] == [
        ("10.250.9.1", gw_mac, ["PERMANENT"])
    ]
    shown = json.loads(ip("-n", pod, "-j", "addr", "show", "eth0").stdout)[0]["addr_info"]
    assert {"10.250.9.5/24", "fd00:9::5/64"} <= {f"{a['local']}/{a['prefixlen']}" for a in shown}
    v4 = json.loads(ip("-n", pod, "-j", "route", "show", "dev", "eth0").stdout)
    assert {"dst": "default", "gateway": "10.250.9.1"} in [
        {"dst": r["dst"], "gateway": r.get("gateway")} for r in v4
    ]
    assert any(r["dst"] == "10.99.0.0/16" and r["scope"] == "link" for r in v4)
    v6 = json.loads(ip("-n", pod, "-6", "-j", "route", "show", "dev", "eth0").stdout)
    assert any(r["dst"] == "default" and r.get("gateway") == "fd00:9::1" for r in v6)


def test_refused_request_is_named_and_the_ones_before_it_stay(spaces: tuple[str, str]) -> None:
    host, pod = spaces
    addrs = [ipaddress.ip_interface("10.250.9.5/24")]
    off_link = [
        (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_address("192.0.2.1")),
        (ipaddress.ip_network("10.98.0.0/16"), ipaddress.ip_address("198.51.100.1")),
    ]
    with plugged(host, pod) as (_, pod_ns, veth), pytest.raises(NetlinkError) as err:
        netns.configure_pod_interface(pod_ns, veth.peer_index, addrs, off_link)
    assert err.value.code == errno.ENETUNREACH
    assert "add route" in str(err.value) and "192.0.2.1" in str(err.value)
    assert "198.51.100.1" not in str(err.value)  # the first refusal is the one reported
    assert "10.250.9.5" in ip("-n", pod, "addr", "show", "eth0").stdout


def test_delete_link_is_idempotent(spaces: tuple[str, str]) -> None:
    host, pod = spaces
    with plugged(host, pod) as (sock, _, _):
        assert nlbatch.delete_link(sock, HOST_END) is True
        assert nlbatch.delete_link(sock, HOST_END) is False
    assert ip("-n", host, "link", "show", HOST_END, check=False).returncode != 0
    assert ip("-n", pod, "link", "show", "eth0", check=False).returncode != 0


def test_pod_netns_lookups_and_missing_namespaces(spaces: tuple[str, str], tmp_path: Path) -> None:
    _, pod = spaces
    with netns.PodNetns(f"/run/netns/{pod}") as pod_ns:
        assert pod_ns.link_index("lo") == 1
        assert pod_ns.link_index("eth0") is None
    with pytest.raises(netns.NetnsMissing):
        netns.PodNetns("/run/netns/sluice-no-such-ns")
    not_a_netns = tmp_path / "file"
    not_a_netns.write_text("")
    with pytest.raises(netns.NetnsMissing):
        netns.PodNetns(str(not_a_netns))
