"""sandbox.ovs.OvsInstance against the real OVS binaries."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox.ovs import OvsCommandError, OvsInstance
from tests.conftest import require_ovs, require_root

pytestmark = pytest.mark.functional


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _links(netns: str | None = None) -> set[str]:
    argv = ["ip", "-o", "link", "show"]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh named network namespace, deleted at teardown."""
    require_root()
    name = "slt" + secrets.token_hex(4)
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=True)


def test_two_instances_side_by_side(
    ovs_factory: Callable[..., OvsInstance], ifname: Callable[[str], str]
) -> None:
    a, b = ovs_factory(), ovs_factory()
    assert a.db_remote != b.db_remote
    assert set(a.pids.values()).isdisjoint(b.pids.values())
    a.vsctl("add-br", "br-a", "--", "set", "Bridge", "br-a", "datapath_type=netdev")
    b.vsctl("add-br", "br-b", "--", "set", "Bridge", "br-b", "datapath_type=netdev")
    assert a.vsctl("list-br").split() == ["br-a"]
    assert b.vsctl("list-br").split() == ["br-b"]
    # ofctl/appctl reach each instance through its own env.
    assert "LOCAL(br-a)" in a.ofctl("show", "br-a")
    with pytest.raises(OvsCommandError):
        b.ofctl("show", "br-a")
    assert "Open vSwitch" in a.appctl("version")
    assert "ovsdb-server" in b.appctl("-t", "ovsdb-server", "version")


def test_env_addresses_instance_with_plain_tools(ovs: OvsInstance) -> None:
    ovs.vsctl("add-br", "br-e", "--", "set", "Bridge", "br-e", "datapath_type=netdev")
    out = subprocess.run(
        ["ovs-vsctl", "list-br"],
        env={**os.environ, **ovs.env},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.split() == ["br-e"]
    assert all(v == str(ovs.workdir) for v in ovs.env.values())


def test_stop_kills_exactly_its_pids_and_is_idempotent(
    tmp_path: Path, ovs_factory: Callable[..., OvsInstance]
) -> None:
    require_ovs()
    other = ovs_factory()
    inst = OvsInstance(tmp_path / "solo").start()
    pids = list(inst.pids.values())
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    inst.stop()
    assert not any(_alive(p) for p in pids)
    assert inst.pids == {}
    inst.stop()  # idempotent
    assert all(_alive(p) for p in other.pids.values())


def test_stop_removes_netdev_tap_devices(
    ovs_factory: Callable[..., OvsInstance], ifname: Callable[[str], str]
) -> None:
    require_root()
    inst, port = ovs_factory(), ifname("i")
    inst.vsctl("add-br", "br-t", "--", "set", "Bridge", "br-t", "datapath_type=netdev")
    inst.vsctl("add-port", "br-t", port, "--", "set", "Interface", port, "type=internal")
    assert port in _links()
    inst.stop()
    assert port not in _links()


def test_context_manager_and_userspace_tso(tmp_path: Path) -> None:
    require_ovs()
    with OvsInstance(tmp_path / "tso", userspace_tso=True) as inst:
        pids = list(inst.pids.values())
        got = inst.vsctl("get", "Open_vSwitch", ".", "other_config:userspace-tso-enable")
        assert got.strip() == '"true"'
        log = inst.log_path("ovs-vswitchd").read_text()
        assert "Userspace TCP Segmentation Offloading support enabled" in log
    assert not any(_alive(p) for p in pids)


def test_daemons_run_inside_netns(ovs_factory: Callable[..., OvsInstance], netns: str) -> None:
    inst = ovs_factory(netns=netns)
    inst.vsctl("add-br", "br-n", "--", "set", "Bridge", "br-n", "datapath_type=netdev")
    inst.vsctl("add-port", "br-n", "gwn", "--", "set", "Interface", "gwn", "type=internal")
    assert "gwn" in _links(netns)
    assert "gwn" not in _links()
    inst.stop()
    assert "gwn" not in _links(netns)


def test_start_fails_cleanly_for_missing_netns(tmp_path: Path) -> None:
    require_ovs()
    inst = OvsInstance(tmp_path / "nons", netns="sluice-no-such-netns")
    with pytest.raises(FileNotFoundError, match="sluice-no-such-netns"):
        inst.start()
    assert inst.pids == {}


def test_start_failure_stops_what_was_started(tmp_path: Path) -> None:
    require_ovs()
    workdir = tmp_path / "bad"
    workdir.mkdir()
    # A directory where ovs-vswitchd wants to write its pidfile makes it exit.
    (workdir / "ovs-vswitchd.pid").mkdir()
    inst = OvsInstance(workdir)
    with pytest.raises(RuntimeError, match="ovs-vswitchd exited"):
        inst.start()
    assert inst.pids == {}
    assert _procs_mentioning(str(workdir)) == []


def _procs_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode():
                found.append(int(proc.name))
        except OSError:
            continue
    return found
