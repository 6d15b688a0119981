"""Which permanent neighbour entries ADD gives a pod: gw0's, for routes through it."""

from __future__ import annotations

import ipaddress

from cni.commands import _gateway_neighbours
from cni.node import NodeNetwork
from cni.types import Route

NET = ipaddress.ip_network
IP = ipaddress.ip_address
GW_MAC = "0a:58:0a:f4:01:01"


def node(gateway_mac: str = GW_MAC, cidrs: tuple[str, ...] = ("10.244.1.0/24",)) -> NodeNetwork:
    return NodeNetwork("br-int", cidrs, 1450, False, "/tmp/x", gateway_mac=gateway_mac)


def test_a_route_through_gw0_gets_its_mac_once() -> None:
    routes = [
        Route(NET("0.0.0.0/0"), IP("10.244.1.1")),
        Route(NET("10.96.0.0/12"), IP("10.244.1.1")),
    ]
    assert _gateway_neighbours(routes, node()) == [(IP("10.244.1.1"), GW_MAC)]


def test_other_gateways_and_direct_routes_get_none() -> None:
    routes = [Route(NET("0.0.0.0/0"), IP("10.244.1.254")), Route(NET("10.99.0.0/16"), None)]
    assert _gateway_neighbours(routes, node()) == []


def test_no_entry_while_gw0_mac_is_unknown() -> None:
    routes = [Route(NET("0.0.0.0/0"), IP("10.244.1.1"))]
    assert _gateway_neighbours(routes, node(gateway_mac="")) == []


def test_each_family_gateway_of_a_dual_stack_node() -> None:
    routes = [Route(NET("0.0.0.0/0"), IP("10.244.1.1")), Route(NET("::/0"), IP("fd00:1::1"))]
    got = _gateway_neighbours(routes, node(cidrs=("10.244.1.0/24", "fd00:1::/64")))
    assert sorted(got, key=str) == sorted(
        [(IP("10.244.1.1"), GW_MAC), (IP("fd00:1::1"), GW_MAC)], key=str
    )
