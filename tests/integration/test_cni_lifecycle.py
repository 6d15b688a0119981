"""Concurrency, GC, STATUS and controller restarts through the real CNI path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.integration.cninode import CniNode, ip

pytestmark = pytest.mark.integration


def test_200_add_del_with_concurrency_8(cni_node: CniNode) -> None:
    names = [f"sltc-{os.getpid() % 1000}-{i}" for i in range(200)]

    def add(i: int) -> tuple[int, dict[str, Any]]:
        ip("netns", "add", names[i])
        return cni_node.cni(
            "ADD",
            cni_node.conf(),
            f"cc{i}",
            f"/run/netns/{names[i]}",
            cni_args=cni_node.pod_args(f"p{i}"),
        )

    def delete(i: int) -> tuple[int, dict[str, Any]]:
        try:
            return cni_node.cni("DEL", cni_node.conf(), f"cc{i}", f"/run/netns/{names[i]}")
        finally:
            ip("netns", "del", names[i], check=False)

    try:
        with ThreadPoolExecutor(8) as pool:
            added = list(pool.map(add, range(200)))
        assert [rc for rc, _ in added] == [0] * 200, [o for rc, o in added if rc][:3]
        addresses = [out["ips"][0]["address"] for _, out in added]
        assert len(set(addresses)) == 200
        assert len(cni_node.pod_ports()) == 200 and len(cni_node.leases()) == 200
        ofports = {p["ofport"] for p in cni_node.numbered_pod_ports()}
        assert len(ofports) == 200 and min(ofports) >= 32768
        with ThreadPoolExecutor(8) as pool:
            deleted = list(pool.map(delete, range(200)))
        assert deleted == [(0, {})] * 200
    finally:
        for name in names:
            ip("netns", "del", name, check=False)
    problems = [
        line for line in cni_node.log().splitlines() if "WARNING" in line or "ERROR" in line
    ]
    assert cni_node.pod_ports() == [], problems
    assert cni_node.leases() == [], problems
    assert "alias sluice/" not in ip("-n", cni_node.name, "-d", "-o", "link").stdout


def host_local(node: CniNode, command: str, container_id: str) -> None:
    conf = {
        "cniVersion": "1.0.0",
        "name": "sluice",
        "ipam": {
            "type": "host-local",
            "dataDir": str(node.state_dir / "ipam"),
            "ranges": [[{"subnet": node.pod_cidr, "gateway": "10.250.1.1"}]],
        },
    }
    rc, out = node.cni(command, conf, container_id, "/proc/self/ns/net", plugin="host-local")
    assert rc == 0, out


def test_gc_removes_planted_stale_state_and_nothing_else(
    cni_node: CniNode, pod_netns: Callable[[], str]
) -> None:
    keep = []
    for i in range(2):
        rc, out = cni_node.cni("ADD", cni_node.conf("1.1.0"), f"keep{i}", pod_netns())
        assert rc == 0
        keep.append(out["interfaces"][0]["name"])
    cni_node.ovs.vsctl(
        "add-port",
        "br-int",
        "stale0",
        "--",
        "set",
        "Interface",
        "stale0",
        "type=internal",
        "external_ids:sluice-owner=cni",
        "external_ids:sluice-container-id=stale-port",
        "external_ids:sluice-if-name=eth0",
    )
    cni_node.ovs.vsctl(
        "add-port", "br-int", "other0", "--", "set", "Interface", "other0", "type=internal"
    )
    ip("-n", cni_node.name, "link", "add", "stale1", "type", "veth", "peer", "name", "stale1p")
    ip("-n", cni_node.name, "link", "set", "stale1", "alias", "sluice/stale-veth/eth0")
    ip("-n", cni_node.name, "link", "add", "mine0", "type", "veth", "peer", "name", "mine0p")
    host_local(cni_node, "ADD", "stale-lease")
    assert len(cni_node.leases()) == 3

    gc_conf = cni_node.conf(
        "1.1.0",
        **{
            "cni.dev/valid-attachments": [
                {"containerID": "keep0", "ifname": "eth0"},
                {"containerID": "keep1", "ifname": "eth0"},
            ]
        },
    )
    assert cni_node.cni("GC", gc_conf) == (0, {})

    ports = {p["name"] for p in cni_node.ports()}
    assert set(keep) <= ports and "other0" in ports and "stale0" not in ports
    links = set(cni_node.host_links())
    assert set(keep) <= links and "mine0" in links and "stale1" not in links
    assert len(cni_node.leases()) == 2
    for i in range(2):
        assert cni_node.cni("DEL", cni_node.conf("1.1.0"), f"keep{i}", "")[0] == 0


def test_status(cni_node: CniNode, pod_netns: Callable[[], str]) -> None:
    conf = cni_node.conf("1.1.0")
    assert cni_node.cni("STATUS", conf) == (0, {})
    small = cni_node.conf(
        "1.1.0",
        ipam={
            "type": "host-local",
            "dataDir": str(cni_node.state_dir / "ipam"),
            "ranges": [[{"subnet": "10.250.1.0/30"}]],
        },
    )  # one usable address
    ns = pod_netns()
    assert cni_node.cni("ADD", small, "only", ns)[0] == 0
    rc, out = cni_node.cni("STATUS", small)
    assert rc == 1 and out["code"] == 50 and "exhausted" in out["msg"]
    assert cni_node.cni("DEL", small, "only", ns) == (0, {})
    cni_node.ovs.vsctl("del-br", "br-int")
    rc, out = cni_node.cni("STATUS", conf)
    assert out["code"] == 51 and "br-int" in out["msg"]


def test_restart_replays_deletes_and_collects_dead_pods(
    cni_node: CniNode, pod_netns: Callable[[], str]
) -> None:
    ns_a, ns_b = pod_netns(), pod_netns()
    assert cni_node.cni("ADD", cni_node.conf(), "pod-a", ns_a)[0] == 0
    assert cni_node.cni("ADD", cni_node.conf(), "pod-b", ns_b)[0] == 0
    cni_node.stop_controller()
    # while the server is down: the runtime deletes pod a, pod b's sandbox dies
    assert cni_node.cni("DEL", cni_node.conf(), "pod-a", ns_a) == (0, {})
    ip("netns", "del", ns_b.rsplit("/", 1)[1])
    assert len(cni_node.pod_ports()) == 2
    cni_node.start_controller()
    assert cni_node.pod_ports() == [] and cni_node.leases() == []
    assert not list((cni_node.state_dir / "pending-del").glob("*.json"))


def test_ovsdb_down_status_is_51(cni_node: CniNode) -> None:
    os.kill(cni_node.ovs.pids["ovsdb-server"], signal.SIGKILL)
    cni_node.ovs._procs.pop("ovsdb-server").wait()
    # the server notices the closed session asynchronously: allow it a moment
    deadline = time.monotonic() + 5
    while (answer := cni_node.cni("STATUS", cni_node.conf("1.1.0")))[0] == 0:
        assert time.monotonic() < deadline, "STATUS kept answering ready"
        time.sleep(0.1)
    assert answer[1]["code"] == 51 and "OVSDB" in answer[1]["msg"]


def test_installed_conflist_declares_versions(tmp_path: Any) -> None:
    from cni import install

    path = install.install_conflist(tmp_path)
    data = json.loads(path.read_text())
    assert data["cniVersion"] == "1.0.0" and "1.1.0" in data["cniVersions"]
    assert [p["type"] for p in data["plugins"]] == ["sluice", "portmap"]
    binary = install.install_binary(tmp_path)
    out = subprocess.run(
        [str(binary)], env={"CNI_COMMAND": "VERSION"}, input=b"{}", capture_output=True, check=True
    ).stdout
    assert json.loads(out)["supportedVersions"][-1] == "1.1.0"
