"""Shared fixtures: private OVS instances and leak-checked interface names.

Nothing here may touch the host's /var/run/openvswitch: the session fixture
points the OVS tools' default directories at an empty temporary directory,
so a test that forgets ``OvsInstance.env`` fails loudly instead of reaching
the host's OVS.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox.ovs import OvsInstance, binaries_missing

OVS_ENV_VARS = ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR")


def pytest_configure(config: pytest.Config) -> None:
    # why: python-ovs' poller imports eventlet (pulled in by os-ken) only to
    # probe for monkey-patching; eventlet 0.41 warns on import.
    config.addinivalue_line("filterwarnings", r"ignore:\s*Eventlet is deprecated")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts a private OVS as ``functional``."""
    for item in items:
        if {"ovs", "ovs_factory"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.functional)


@pytest.fixture(scope="session", autouse=True)
def _no_host_ovs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point OVS_RUNDIR & co. at an empty directory for the whole session."""
    empty = tmp_path_factory.mktemp("no-host-ovs")
    saved = {k: os.environ.get(k) for k in OVS_ENV_VARS}
    os.environ.update({k: str(empty) for k in OVS_ENV_VARS})
    yield empty
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def require_ovs() -> None:
    """Skip the calling test when the OVS binaries or schema are missing."""
    missing = binaries_missing()
    if missing:
        pytest.skip(f"Open vSwitch not installed (missing: {', '.join(missing)})")


def require_root() -> None:
    """Skip the calling test unless it may create links (netdev ports are TAP devices)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: netdev internal ports are TAP devices (CAP_NET_ADMIN)")


@pytest.fixture
def ovs_factory(tmp_path: Path) -> Iterator[Callable[..., OvsInstance]]:
    """Start extra OvsInstances (``ovs_factory(netns=..., userspace_tso=...)``).

    Each gets its own directory under ``tmp_path``; all are stopped by pid at
    teardown, and the test fails if any daemon survives.
    """
    require_ovs()
    started: list[OvsInstance] = []

    def start(netns: str | None = None, userspace_tso: bool = False) -> OvsInstance:
        # why: tmp_path keeps paths short enough for unix sockets (107 bytes).
        inst = OvsInstance(tmp_path / f"ovs{len(started)}", netns, userspace_tso)
        started.append(inst)
        return inst.start()

    yield start
    pids = [pid for inst in started for pid in inst.pids.values()]
    for inst in reversed(started):
        inst.stop()
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not alive, f"OVS daemons still running after stop(): {alive}"


@pytest.fixture
def ovs(ovs_factory: Callable[..., OvsInstance]) -> OvsInstance:
    """A private ovsdb-server + ovs-vswitchd in ``tmp_path``, stopped at teardown."""
    return ovs_factory()


@pytest.fixture
def ifname() -> Iterator[Callable[[str], str]]:
    """Make unique link names (``ifname("p1")`` -> ``t3fa9c1p1``, at most 15 chars).

    At teardown the test fails if a link with this test's prefix is left in
    the root network namespace.
    """
    prefix = "t" + secrets.token_hex(3)

    def make(suffix: str = "") -> str:
        name = prefix + suffix
        assert len(name) <= 15, f"interface name {name!r} longer than 15 characters"
        return name

    yield make
    leftover = sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith(prefix))
    assert not leftover, f"links left behind: {leftover}"
