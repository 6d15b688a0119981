"""Bad input and broken dependencies: each gets its documented code and leaves nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.integration.cninode import CniNode, ip

pytestmark = pytest.mark.integration


@pytest.fixture
def clean_node(cni_node: CniNode) -> Iterator[CniNode]:
    """The node; afterwards no pod port, lease or Sluice veth may remain."""
    yield cni_node
    links = ip("-n", cni_node.name, "-d", "-o", "link", "show").stdout
    assert "alias sluice/" not in links
    assert cni_node.leases() == []
    if cni_node.ovs.pids.get("ovsdb-server"):
        assert cni_node.pod_ports() == []


def add(node: CniNode, ns: str, conf: dict | None = None, **kw: object) -> tuple[int, dict]:
    return node.cni("ADD", conf or node.conf(), "cid-bad", ns, **kw)  # type: ignore[arg-type]


def test_bad_json(clean_node: CniNode, pod_netns: Callable[[], str]) -> None:
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c",
        "CNI_NETNS": pod_netns(),
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/usr/lib/cni",
    }
    proc = subprocess.run(
        ["ip", "netns", "exec", clean_node.name, str(clean_node.bin_dir / "sluice")],
        input="{oops",
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and json.loads(proc.stdout)["code"] == 6


def test_invalid_value_is_code_7(clean_node: CniNode, pod_netns: Callable[[], str]) -> None:
    rc, out = add(clean_node, pod_netns(), clean_node.conf(dns="not-a-dict"))
    assert rc == 1 and out["code"] == 7 and "dns" in out["msg"]


def test_unknown_version(clean_node: CniNode, pod_netns: Callable[[], str]) -> None:
    rc, out = add(clean_node, pod_netns(), clean_node.conf("9.9.9"))
    assert rc == 1 and out["code"] == 1 and "9.9.9" in out["msg"]


def test_unknown_key(clean_node: CniNode, pod_netns: Callable[[], str]) -> None:
    rc, out = add(clean_node, pod_netns(), clean_node.conf(vlanId=5))
    assert out["code"] == 2 and "vlanId" in out["msg"]


@pytest.mark.parametrize("var", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"])
def test_missing_env(clean_node: CniNode, pod_netns: Callable[[], str], var: str) -> None:
    rc, out = add(clean_node, pod_netns(), drop=(var,))
    assert rc == 1 and out["code"] == 4 and var in out["msg"]


def test_netns_missing(clean_node: CniNode) -> None:
    rc, out = add(clean_node, "/run/netns/sluice-no-such-ns")
    assert out["code"] == 3 and "network namespace" in out["msg"]


def test_ifname_taken(clean_node: CniNode, pod_netns: Callable[[], str]) -> None:
    ns = pod_netns()
    pod = ns.rsplit("/", 1)[1]
    ip("-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
    rc, out = add(clean_node, ns)
    assert out["code"] == 100 and "eth0" in out["msg"]


def test_pool_exhausted(clean_node: CniNode, pod_netns: Callable[[], str]) -> None:
    ipam = {
        "type": "host-local",
        "dataDir": str(clean_node.state_dir / "ipam"),
        "ranges": [
            [{"subnet": "10.250.1.0/24", "rangeStart": "10.250.1.10", "rangeEnd": "10.250.1.11"}]
        ],
    }
    conf = clean_node.conf(ipam=ipam)
    pods = [(f"cid-{i}", pod_netns()) for i in range(3)]
    assert [clean_node.cni("ADD", conf, c, n)[0] for c, n in pods[:2]] == [0, 0]
    rc, out = clean_node.cni("ADD", conf, *pods[2])
    assert rc == 1 and out["code"] == 102 and "no IP addresses available" in out["msg"]
    assert len(clean_node.leases()) == 2 and len(clean_node.pod_ports()) == 2
    for c, n in pods:
        assert clean_node.cni("DEL", conf, c, n) == (0, {})


def test_ovs_failure_rolls_back(clean_node: CniNode, pod_netns: Callable[[], str]) -> None:
    clean_node.ovs.vsctl("del-br", "br-int")
    rc, out = add(clean_node, pod_netns())
    assert out["code"] == 101 and "br-int" in out["details"]


def test_ovsdb_down_is_try_again_later(clean_node: CniNode, pod_netns: Callable[[], str]) -> None:
    os.kill(clean_node.ovs.pids["ovsdb-server"], signal.SIGKILL)
    clean_node.ovs._procs.pop("ovsdb-server").wait()
    rc, out = add(clean_node, pod_netns())
    assert rc == 1 and out["code"] == 11 and "OVSDB" in out["msg"]


def test_server_down(clean_node: CniNode, pod_netns: Callable[[], str]) -> None:
    clean_node.stop_controller()
    rc, out = add(clean_node, pod_netns())
    assert rc == 1 and out["code"] == 11
    rc, out = clean_node.cni("STATUS", clean_node.conf("1.1.0"))
    assert out["code"] == 50
