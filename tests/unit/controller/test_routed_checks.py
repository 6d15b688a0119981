"""The checks of routed modes that the controller reports through /readyz."""

from __future__ import annotations

import ipaddress

import pytest

from controller.runtime import peer_problem, underlay_problem

FABRIC = ipaddress.IPv4Network("198.51.100.0/24")


def test_a_pod_range_of_the_fabric_subnet_is_fine():
    assert underlay_problem("198.51.100.128/28", FABRIC) is None


@pytest.mark.parametrize(
    ("cidr", "subnet"),
    [("10.244.1.0/24", FABRIC), ("198.51.100.0/23", FABRIC), ("198.51.100.128/28", None)],
)
def test_a_pod_range_off_the_fabric_is_named_with_the_subnet(cidr, subnet):
    problem = underlay_problem(cidr, subnet)
    assert problem is not None
    assert cidr in problem and str(subnet) in problem


@pytest.mark.parametrize("mode", ["routing", "underlay"])
def test_a_routed_peer_off_our_segment_is_named_with_a_way_out(mode):
    problem = peer_problem(mode, FABRIC, "node3", "203.0.113.13")
    assert problem is not None
    assert "node3 (203.0.113.13)" in problem and str(FABRIC) in problem and mode in problem
    assert "hybrid" in problem


@pytest.mark.parametrize(
    ("mode", "ip"),
    [("routing", "198.51.100.12"), ("overlay", "203.0.113.13"), ("hybrid", "203.0.113.13")],
)
def test_peers_that_the_mode_can_reach_are_no_problem(mode, ip):
    assert peer_problem(mode, FABRIC, "node2", ip) is None
