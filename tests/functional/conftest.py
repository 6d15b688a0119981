"""Fixtures shared by the functional tests (real OVS in a temporary directory)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import ovsdb
from sandbox.ovs import OvsInstance
from tests.conftest import require_root

BR = "br-int"


@pytest.fixture
def client(ovs: OvsInstance) -> Iterator[ovsdb.OvsdbClient]:
    """An OvsdbClient on the private instance with a netdev br-int, closed at teardown."""
    require_root()
    c = ovsdb.OvsdbClient(ovs.db_remote, timeout=10.0)
    ovsdb.ensure_bridge(c, BR, "netdev")
    yield c
    c.close()
