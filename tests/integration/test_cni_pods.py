"""Two pods on one node through the real CNI path: addresses, routes, MTU, OVSDB, traffic."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.cninode import CniNode, in_netns, ip, netns

pytestmark = pytest.mark.integration


def add_pod(node: CniNode, make_ns: Callable[[], str], name: str, version: str = "1.0.0"):
    ns = make_ns()
    rc, out = node.cni("ADD", node.conf(version), f"cid-{name}", ns, cni_args=node.pod_args(name))
    assert rc == 0, out
    return ns, out


def test_two_pods_plugged_in_and_talking(cni_node: CniNode, pod_netns: Callable[[], str]) -> None:
    ns_a, res_a = add_pod(cni_node, pod_netns, "alpha")
    ns_b, res_b = add_pod(cni_node, pod_netns, "beta")
    pod_net = ipaddress.ip_network("10.250.1.0/24")
    addr_a = ipaddress.ip_interface(res_a["ips"][0]["address"])
    addr_b = ipaddress.ip_interface(res_b["ips"][0]["address"])
    assert addr_a in pod_net and addr_b in pod_net and addr_a != addr_b
    assert res_a["ips"][0]["gateway"] == "10.250.1.1" and res_a["ips"][0]["interface"] == 1
    host_if, pod_if = res_a["interfaces"]
    assert pod_if == {"name": "eth0", "mac": pod_if["mac"], "sandbox": ns_a}
    assert host_if["name"].startswith("alpha-") and "sandbox" not in host_if
    assert res_a["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.250.1.1"}]

    # inside the pod: address, default route, MTU (overlay, uplink 1500 → 1450), offload off
    pod_name = ns_a.rsplit("/", 1)[1]
    link = json.loads(ip("-n", pod_name, "-j", "addr", "show", "eth0").stdout)[0]
    assert link["mtu"] == 1450 and link["address"] == pod_if["mac"]
    assert any(a["local"] == str(addr_a.ip) for a in link["addr_info"])
    routes = json.loads(ip("-n", pod_name, "-j", "route", "show", "default").stdout)
    assert routes[0]["gateway"] == "10.250.1.1"
    features = in_netns(pod_name, "ethtool", "-k", "eth0").stdout
    assert "tx-checksumming: off" in features
    # gw0's MAC is known without an ARP exchange
    (gw0,) = json.loads(ip("-n", cni_node.name, "-j", "link", "show", "gw0").stdout)
    neigh = json.loads(ip("-n", pod_name, "-j", "neigh", "show", "10.250.1.1").stdout)
    assert [(n["lladdr"], n["state"]) for n in neigh] == [(gw0["address"], ["PERMANENT"])]

    # OVSDB: the port with the pod's identity, ofport in the high range
    (row,) = [p for p in cni_node.numbered_pod_ports() if p["name"] == host_if["name"]]
    ext = row["external_ids"]
    assert row["ofport"] >= 32768
    assert ext["sluice-container-id"] == "cid-alpha" and ext["sluice-if-name"] == "eth0"
    assert (ext["sluice-pod-namespace"], ext["sluice-pod-name"]) == ("default", "alpha")
    assert ext["sluice-pod-uid"] == "uid-alpha" and ext["sluice-ips"] == str(addr_a)
    assert ext["sluice-mac"] == pod_if["mac"] and ext["sluice-netns"] == ns_a

    # with a forwarding flow the test installs, the pods ping and talk TCP
    cni_node.ovs.ofctl("-O", "OpenFlow13", "add-flow", "br-int", "priority=1,actions=NORMAL")
    ping = in_netns(pod_name, "ping", "-c", "3", "-i", "0.2", "-W", "2", str(addr_b.ip))
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert_tcp(ns_b.rsplit("/", 1)[1], pod_name, str(addr_b.ip))


def assert_tcp(server_ns: str, client_ns: str, server_ip: str) -> None:
    """Move 4 MiB over TCP from client to server pod."""
    import subprocess
    import sys

    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            server_ns,
            sys.executable,
            "-c",
            "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
            "s.bind(('0.0.0.0',5001));s.listen();print('up',flush=True);c,_=s.accept();n=0\n"
            "while True:\n d=c.recv(65536)\n if not d: break\n n+=len(d)\nprint(n)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "up"
        client = in_netns(
            client_ns,
            sys.executable,
            "-c",
            f"import socket;s=socket.create_connection(('{server_ip}',5001),5);"
            "s.sendall(b'x'*(4<<20));s.close()",
            timeout=30,
        )
        assert client.returncode == 0, client.stderr
        assert server.stdout.readline().strip() == str(4 << 20)
    finally:
        server.kill()
        server.wait()


def test_del_twice_like_containerd_leaves_nothing(
    cni_node: CniNode, pod_netns: Callable[[], str]
) -> None:
    ns, res = add_pod(cni_node, pod_netns, "gamma")
    host = res["interfaces"][0]["name"]
    conf = cni_node.conf(prevResult=res)
    args = cni_node.pod_args("gamma")
    assert cni_node.cni("DEL", conf, "cid-gamma", ns, cni_args=args) == (0, {})
    assert cni_node.cni("DEL", cni_node.conf(), "cid-gamma", "", cni_args=args) == (0, {})
    assert cni_node.pod_ports() == []
    assert cni_node.leases() == []
    assert host not in cni_node.host_links()


def test_userspace_tso_keeps_checksum_offload(tmp_path: Path, pod_netns: Callable[[], str]) -> None:
    """With userspace TSO on, OVS handles partial checksums: the CNI leaves offload on."""
    with netns("sltt-") as name:
        node = CniNode(tmp_path, name, "10.250.1.0/24", userspace_tso=True)
        try:
            node.start()
            ns_a, _ = add_pod(node, pod_netns, "fast")
            ns_b, res_b = add_pod(node, pod_netns, "peer")
            pod_a, pod_b = ns_a.rsplit("/", 1)[1], ns_b.rsplit("/", 1)[1]
            assert "tx-checksumming: on" in in_netns(pod_a, "ethtool", "-k", "eth0").stdout
            ip_b = res_b["ips"][0]["address"].split("/")[0]
            node.ovs.ofctl("-O", "OpenFlow13", "add-flow", "br-int", "priority=1,actions=NORMAL")
            assert_tcp(pod_b, pod_a, ip_b)
        finally:
            node.stop()
