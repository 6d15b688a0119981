"""Fixtures for root + netns tests: skip cleanly where they cannot run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cninode import CniNode, netns


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ovsdb-server", "ovs-vswitchd", "ip"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            return f"{tool} not installed"
    if not Path("/usr/lib/cni/host-local").exists():
        return "containernetworking-plugins not installed"
    return None


@pytest.fixture
def cni_node(tmp_path: Path) -> Iterator[CniNode]:
    """A node netns with OVS and sluice-controller on podCIDR 10.250.1.0/24."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    with netns("sltn-") as name:
        node = CniNode(tmp_path, name, "10.250.1.0/24")
        try:
            node.start()
            yield node
        finally:
            node.stop()


@pytest.fixture
def pod_netns() -> Iterator[object]:
    """A factory of pod network namespaces, all removed afterwards."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield lambda: f"/run/netns/{stack.enter_context(netns('sltp-'))}"
