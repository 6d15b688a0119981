"""The controller's flows on real OVS (netdev) with real pods: traffic, names, restarts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from flows import cookies
from tests.integration.cninode import CniNode, in_netns, ip
from tests.integration.test_cni_pods import assert_tcp

pytestmark = pytest.mark.integration
OF13 = ("-O", "OpenFlow13")


def add_pod(node: CniNode, make_ns: Callable[[], str], name: str) -> tuple[str, str]:
    """ADD a pod; return (netns name, IP)."""
    ns = make_ns()
    rc, out = node.cni("ADD", node.conf(), f"cid-{name}", ns, cni_args=node.pod_args(name))
    assert rc == 0, out
    return ns.rsplit("/", 1)[1], out["ips"][0]["address"].split("/")[0]


def wait_ping(ns: str, target: str, timeout: float = 10.0) -> float:
    """Ping until one reply arrives; return the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if in_netns(ns, "ping", "-c", "1", "-W", "0.2", target).returncode == 0:
            return time.monotonic() - start
    raise AssertionError(f"no ping reply from {target} in {ns} within {timeout} s")


def dump(node: CniNode) -> list[str]:
    text = node.ovs.ofctl(*OF13, "--names", "dump-flows", "br-int")
    return [line.strip() for line in text.splitlines() if "cookie=" in line]


def rest(node: CniNode, path: str) -> tuple[int, Any]:
    """GET http://127.0.0.1:9595{path} inside the node netns."""
    code = (
        "import sys,json,urllib.request,urllib.error\n"
        "try:\n r=urllib.request.urlopen('http://127.0.0.1:9595'+sys.argv[1]);s=r.status;b=r.read()\n"
        "except urllib.error.HTTPError as e: s=e.code;b=e.read()\n"
        "print(s);print(b.decode())"
    )
    out = in_netns(node.name, "python3", "-c", code, path).stdout.split("\n", 1)
    return int(out[0]), json.loads(out[1]) if out[1].strip().startswith(("{", "[")) else out[1]


def test_pods_and_host_talk_through_controller_flows(
    cni_node: CniNode, pod_netns: Callable[[], str]
) -> None:
    ns_a, ip_a = add_pod(cni_node, pod_netns, "alpha")
    ns_b, ip_b = add_pod(cni_node, pod_netns, "beta")
    wait_ping(ns_a, ip_b)
    assert_tcp(ns_b, ns_a, ip_b)
    wait_ping(ns_a, "10.250.1.1")  # pod → gw0
    # the gateway's MAC as the pod learnt it is gw0's: OVS answered, not the host's stack
    gw_mac = json.loads(ip("-n", cni_node.name, "-j", "link", "show", "gw0").stdout)[0]["address"]
    neigh = json.loads(ip("-n", ns_a, "-j", "neigh", "show", "10.250.1.1").stdout)
    assert [n["lladdr"] for n in neigh] == [gw_mac]
    wait_ping(cni_node.name, ip_b)  # host (kubelet probes) → pod via gw0
    flows = dump(cni_node)
    assert not any("NORMAL" in f for f in flows)
    assert any("table=Classifier" in f for f in flows) and any(
        "table=L3Forwarding" in f for f in flows
    )
    assert not any(re.search(r"table=\d+,", f) for f in flows)


def test_spoofed_source_is_dropped(cni_node: CniNode, pod_netns: Callable[[], str]) -> None:
    ns_a, ip_a = add_pod(cni_node, pod_netns, "honest")
    ns_b, ip_b = add_pod(cni_node, pod_netns, "target")
    wait_ping(ns_a, ip_b)
    ip("-n", ns_a, "addr", "add", "10.250.1.200/24", "dev", "eth0")
    spoofed = in_netns(ns_a, "ping", "-c", "2", "-W", "1", "-I", "10.250.1.200", ip_b)
    assert spoofed.returncode != 0


def test_rest_api_serves_the_live_state(cni_node: CniNode, pod_netns: Callable[[], str]) -> None:
    ns_a, ip_a = add_pod(cni_node, pod_netns, "rest")
    wait_ping(ns_a, "10.250.1.1")
    status, pods = rest(cni_node, "/v1/pods")
    assert status == 200 and [(p["name"], p["ips"]) for p in pods] == [("rest", [ip_a])]
    status, flows = rest(cni_node, "/v1/flows?pod=default/rest")
    assert status == 200 and flows and all(f["category"] == "pod" for f in flows)
    status, flows = rest(cni_node, "/v1/flows?table=Classifier")
    assert status == 200 and {f["table"] for f in flows} == {"Classifier"}
    status, err = rest(cni_node, "/v1/flows?table=Nope")
    assert status == 404 and "table" in json.dumps(err)
    status, ready = rest(cni_node, "/readyz")
    assert status == 200, ready
    status, metrics = rest(cni_node, "/metrics")
    assert status == 200 and "sluice_flows{" in metrics


def test_controller_kill9_loses_no_ping_and_keeps_flows(
    cni_node: CniNode, pod_netns: Callable[[], str]
) -> None:
    ns_a, ip_a = add_pod(cni_node, pod_netns, "left")
    ns_b, ip_b = add_pod(cni_node, pod_netns, "right")
    wait_ping(ns_a, ip_b)
    before = sorted(strip_stats(f) for f in dump(cni_node))
    t0 = time.monotonic()
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", ns_a, "ping", "-i", "0.01", "-c", "500", "-W", "1", ip_b],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    assert cni_node.controller is not None
    os.kill(cni_node.controller.pid, signal.SIGKILL)
    cni_node.controller.wait()
    cni_node.start_controller()
    out, _ = pinger.communicate(timeout=60)
    assert " 0% packet loss" in out, out
    deadline = time.monotonic() + 10
    while {cookies.round_of(cookie(f)) for f in dump(cni_node)} != {2}:
        assert time.monotonic() < deadline, dump(cni_node)
        time.sleep(0.1)
    after = dump(cni_node)
    elapsed = time.monotonic() - t0
    assert sorted(strip_stats(f) for f in after) == before  # same flows, only the round moved
    for flow in after:
        seconds = float(flow.split("duration=")[1].split("s,")[0])
        assert seconds >= elapsed - 0.5, f"flow was re-added: {flow}"


def cookie(flow: str) -> int:
    return int(flow.split(",")[0].split("=")[1], 16)


def strip_stats(flow: str) -> str:
    """The flow without cookie round, duration and counters."""
    fields = [
        f for f in flow.split(", ") if not f.startswith(("duration=", "n_packets=", "n_bytes="))
    ]
    head = f"cookie={cookie(flow) & ~cookies.round_mask():#x}"
    return ", ".join([head, *fields[1:]])


def test_vswitchd_restart_replays_flows(cni_node: CniNode, pod_netns: Callable[[], str]) -> None:
    ns_a, ip_a = add_pod(cni_node, pod_netns, "one")
    ns_b, ip_b = add_pod(cni_node, pod_netns, "two")
    wait_ping(ns_a, ip_b)
    cni_node.ovs.crash_vswitchd()
    cni_node.ovs.start_vswitchd()
    assert wait_ping(ns_a, ip_b, timeout=10) < 2.0
