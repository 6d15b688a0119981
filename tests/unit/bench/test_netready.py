"""The network-ready benchmark's pure parts, its prober on loopback and its sandbox lock.

Nothing here needs root or the sandbox: the parsers get lines shaped like
``ovsdb-client``/``ovs-vsctl``/sluice-controller print them, the prober runs on
127.0.0.1 only, the lock is taken on a temporary file.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bench import netready_report as rec
from bench.common import REPO, percentile
from bench.netready_watch import (
    PROBER,
    Probe,
    add_returns,
    controller_stages,
    find_rows,
    monitor_rows,
    probe_line,
)
from ovsdb import schema


def _ids(pod: str, cid: str, ips: str, owner: str = schema.OWNER_CNI) -> list[Any]:
    pairs = {
        schema.OWNER: owner,
        schema.POD_NAMESPACE: "default",
        schema.POD_NAME: pod,
        schema.CONTAINER_ID: cid,
        schema.IPS: ips,
        schema.NETNS: f"/run/netns/{pod}",
    }
    return ["map", sorted([k, v] for k, v in pairs.items() if v)]


def test_monitor_rows_keeps_cni_ports_with_ips_and_strips_the_prefix_length() -> None:
    line = json.dumps(
        {
            "headings": ["row", "action", "external_ids"],
            "data": [
                ["u1", "insert", _ids("a", "c1", "10.244.1.5/24")],
                ["u2", "insert", ["map", []]],  # br-int, the tunnel port...
                ["u3", "insert", _ids("b", "c2", "")],  # no address yet
                ["u4", "old", _ids("c", "c3", "10.244.1.6/24")],
                ["", "new", _ids("c", "c3", "10.244.1.7/24,fd00::7/64")],
                ["u5", "insert", _ids("d", "c4", "10.244.1.8/24", owner="other")],
            ],
        }
    )
    rows = monitor_rows(line)
    assert [(r.pod, r.container_id, r.ip) for r in rows] == [
        ("default/a", "c1", "10.244.1.5"),
        ("default/c", "c3", "10.244.1.7"),
    ]
    assert rows[0].netns == "/run/netns/a"
    assert monitor_rows("not json") == [] and monitor_rows('{"caption": "x"}') == []


def test_monitor_rows_reads_the_ofport_once_vswitchd_set_it() -> None:
    heads = ["row", "action", "external_ids", "ofport"]
    ids = _ids("a", "c1", "10.244.1.5/24")
    inserted = {"headings": heads, "data": [["u1", "insert", ids, ["set", []]]]}
    numbered = {
        "headings": heads,
        "data": [["u1", "old", None, ["set", []]], ["", "new", ids, 33001]],
    }
    failed = {"headings": heads, "data": [["", "new", ids, -1]]}
    assert [r.ofport for r in monitor_rows(json.dumps(inserted))] == [None]
    assert [r.ofport for r in monitor_rows(json.dumps(numbered))] == [33001]
    assert [r.ofport for r in monitor_rows(json.dumps(failed))] == [None]


def test_find_rows_reads_ovs_vsctl_json() -> None:
    text = json.dumps(
        {"headings": ["external_ids"], "data": [[_ids("p", "c9", "10.244.2.3/24")], [["map", []]]]}
    )
    assert [(r.pod, r.ip) for r in find_rows(text)] == [("default/p", "10.244.2.3")]


def test_add_returns_takes_successful_adds_at_millisecond_precision() -> None:
    log = "\n".join(
        [
            "2025-01-02 03:04:05,100 INFO cni.server: CNI ADD 0123456789ab/eth0 rc=0 in 12.5 ms",
            "2025-01-02 03:04:05,350 INFO cni.server: CNI ADD ba9876543210/eth0 rc=0 in 3.0 ms",
            "2025-01-02 03:04:06,000 INFO cni.server: CNI ADD ffffffffffff/eth0 rc=1 in 1.0 ms",
            "2025-01-02 03:04:07,000 INFO cni.server: CNI DEL 0123456789ab/eth0 rc=0 in 1.0 ms",
            "2025-01-02 03:04:07,000 INFO controller.app: pod default/x learnt",
        ]
    )
    seconds = {"2025-01-02 03:04:05": 1000.0}
    found = add_returns(log, clock=seconds.__getitem__)
    assert set(found) == {"0123456789ab", "ba9876543210"}
    assert found["ba9876543210"] - found["0123456789ab"] == pytest.approx(0.25)
    assert 1000.1 <= found["0123456789ab"] < 1000.101


def test_controller_stages_reads_podwatch_and_reconcile_lines() -> None:
    cid = "0123456789abcdef" * 4
    log = "\n".join(
        [
            "2025-01-02 03:04:05,100 INFO controller.podwatch: pod default/a on port "
            "slab: ofport 32768 (requested)",
            "2025-01-02 03:04:05,180 WARNING controller.podwatch: pod default/a on port "
            "slab: ovs-vswitchd assigned ofport 32769, not 32768; re-rendering flows",
            f"2025-01-02 03:04:05,130 INFO controller.reconcile: pod flows installed for "
            f"pod/{cid}/eth0 pod/feedfacecafe0000/eth0: model 1.0 ms, switch 20.0 ms",
            f"2025-01-02 03:04:05,190 INFO controller.reconcile: pod flows installed for "
            f"pod/{cid}/eth0: model 1.0 ms, switch 5.0 ms",
        ]
    )
    seen, installed = controller_stages(log, clock={"2025-01-02 03:04:05": 1000.0}.__getitem__)
    assert seen == {"default/a": pytest.approx(1000.1005)}
    assert installed == {
        cid[:12]: pytest.approx(1000.1305),
        "feedfacecafe": pytest.approx(1000.1305),
    }


def test_probe_line() -> None:
    assert probe_line("10.244.1.5 ok 1700000000.123456 7\n") == (
        "10.244.1.5",
        Probe(True, 1700000000.123456, 7),
    )
    assert probe_line("10.244.1.5 fail 1.5 3") == ("10.244.1.5", Probe(False, 1.5, 3))
    assert probe_line("Traceback (most recent call last):") is None


def test_path_row_counts_failures_as_the_deadline_and_early_replies() -> None:
    adds = [100.0 + i for i in range(100)]
    latencies_ms = [float(i) - 5.0 for i in range(99)]  # five replies before the ADD returned
    probes: list[Probe | None] = [
        Probe(True, t + ms / 1000.0, 1 if ms < 0 else 3)
        for t, ms in zip(adds, latencies_ms, strict=False)
    ]
    probes.append(Probe(False, adds[-1] + 10.0, 2000))
    row = rec.path_row("x", adds, probes)
    expected = [*latencies_ms, rec.DEADLINE_S * 1000.0]
    assert row["n"] == 100 and row["failures"] == 1
    assert row["p50_ms"] == pytest.approx(percentile(expected, 50), abs=0.01)
    assert row["p99_ms"] == pytest.approx(percentile(expected, 99), abs=0.01)
    assert row["max_ms"] == rec.DEADLINE_S * 1000.0
    assert row["ready_before_add_returned"] == 5 and row["ready_at_first_probe"] == 5


def _sample(index: int, remote_ms: float, local_ms: float) -> rec.Sample:
    add = 10.0 + index
    return rec.Sample(
        pod=f"nr-node2-{index:03d}",
        node="node2",
        index=index,
        add_return=add,
        row_seen=add + 0.001,
        ofport_seen=add + 0.005,
        remote=Probe(True, add + remote_ms / 1000.0, 4),
        local=Probe(True, add + local_ms / 1000.0, 2),
    )


def test_report_compares_the_paths_and_judges_the_target() -> None:
    res = rec.report([_sample(i, 20.0, 10.0) for i in range(4)], {"p": 1}, {}, step=2)
    remote, local, feed, ofport, _learnt, _flows = res["tables"][0]["rows"]
    assert remote["p99_ms"] == pytest.approx(20.0, abs=0.01)
    assert local["p99_ms"] == pytest.approx(10.0, abs=0.01)
    assert feed["p50_ms"] == pytest.approx(1.0, abs=0.01)
    assert ofport["p50_ms"] == pytest.approx(5.0, abs=0.01)
    assert res["breakdown"]["ratio_other_node_to_same_node"]["p99"] == pytest.approx(2.0)
    assert res["targets"][0]["met"] is True
    json.dumps(res)


def test_report_splits_the_controller_share_out() -> None:
    samples = [
        replace(_sample(i, 30.0, 20.0), pod_seen=10.0 + i + 0.002, flows_installed=10.0 + i + 0.012)
        for i in range(4)
    ]
    res = rec.report(samples, {}, {}, step=2)
    rows = {r["path"]: r for r in res["tables"][0]["rows"]}
    assert rows["its flows installed, barrier answered (reference)"]["p50_ms"] == pytest.approx(
        12.0, abs=0.01
    )
    stages = res["breakdown"]["stages"]
    assert stages["controller_learnt_to_flows_installed_ms"]["p50"] == pytest.approx(10.0)
    assert stages["flows_installed_to_other_node_reply_ms"]["p99"] == pytest.approx(18.0)
    assert stages["ofport_set_to_other_node_reply_ms"]["n"] == 4


def test_report_misses_the_target_and_shows_the_trend_with_the_pod_count() -> None:
    samples = [_sample(i, 50.0 + 100.0 * (i // 3), 40.0) for i in range(9)]
    res = rec.report(samples, {}, {}, step=3)
    assert res["targets"][0]["met"] is False
    trend = res["tables"][1]["rows"]
    assert [r["pod_numbers"] for r in trend] == ["0-2", "3-5", "6-8"]
    assert [r["other_node_p50_ms"] for r in trend] == pytest.approx([50.0, 150.0, 250.0], abs=0.01)
    assert all(r["n"] == 3 for r in trend)


# ---------------------------------------------------------------------------- the prober


def _prober(port: int, ips: list[str], deadline: float) -> list[tuple[str, Probe]]:
    out = subprocess.run(
        [sys.executable, str(PROBER), str(port), "0.003", "0.2", str(deadline)],
        input="".join(f"{ip}\n" for ip in ips),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    parsed = [probe_line(line) for line in out.stdout.splitlines()]
    assert None not in parsed
    return [p for p in parsed if p is not None]


@pytest.fixture
def full_listener() -> Iterator[int]:
    """A loopback port whose accept queue is full: the kernel drops further SYNs."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    fill = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(srv.getsockname())
        fill.append(c)
    try:
        yield srv.getsockname()[1]
    finally:
        for c in fill:
            c.close()
        srv.close()


def test_prober_counts_a_refused_connection_as_ready() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]  # bound, not listening: the kernel answers RST
    try:
        got = dict(_prober(port, ["127.0.0.1"], deadline=5.0))
    finally:
        srv.close()
    assert got["127.0.0.1"].ok and got["127.0.0.1"].attempts == 1


def test_prober_retries_until_its_deadline_when_nothing_answers(full_listener: int) -> None:
    got = dict(_prober(full_listener, ["127.0.0.1"], deadline=0.3))
    assert not got["127.0.0.1"].ok and got["127.0.0.1"].attempts > 5


# ---------------------------------------------------------------------------- the lock

LOCK_CHILD = (
    "import sys; from pathlib import Path; from bench.netready_watch import sandbox_lock\n"
    "with sandbox_lock(Path(sys.argv[1])):\n    print('in', flush=True)\n"
)


def _lock_child(lock: Path, *prefix: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*prefix, sys.executable, "-c", LOCK_CHILD, str(lock)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sandbox_lock_waits_for_another_holder(tmp_path: Path) -> None:
    lock = tmp_path / "sandbox.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    child = _lock_child(lock, "timeout", "30")
    try:
        assert child.stderr is not None
        lines = []
        for line in child.stderr:  # ends at "waiting", or at EOF if the child never waited
            lines.append(line)
            if "waiting" in line:
                break
        assert any("waiting" in line for line in lines) and child.poll() is None
        fcntl.flock(fd, fcntl.LOCK_UN)
        out, _ = child.communicate(timeout=20)
        assert out == "in\n"
    finally:
        child.kill()
        child.wait()
        os.close(fd)


@pytest.mark.skipif(shutil.which("flock") is None, reason="needs util-linux flock")
def test_sandbox_lock_reuses_the_lock_its_caller_holds_through_flock(tmp_path: Path) -> None:
    lock = tmp_path / "sandbox.lock"
    child = _lock_child(lock, "flock", str(lock))
    try:
        out, err = child.communicate(timeout=10)
    finally:
        child.kill()
        child.wait()
    assert out == "in\n" and "waiting" not in err
