"""Input validation: every rule rejects a bad value and names the key."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flows.model import RemoteNode
from flows.remote import flows_for_remote_node
from tests.unit.flows.sample import NODE, POD_A, REMOTE, ROUTED_NODE


def test_values_are_normalized():
    node = replace(NODE, gateway_mac="02:00:00:00:01:AB")
    assert node.gateway_mac == "02:00:00:00:01:ab"
    assert POD_A.ips == ("10.244.1.2",)  # OVSDB's "ip/prefix" form accepted
    assert NODE.gateway_ofport == 2 and NODE.tunnel_ofport == 1 and NODE.uplink_ofport == 3


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"node_ip": "300.1.1.1"}, "node_ip"),
        ({"pod_cidrs": ()}, "pod_cidrs"),
        ({"pod_cidrs": ("10.244.1.1/24",)}, "pod_cidrs"),
        ({"pod_cidrs": ("10.99.0.0/24",)}, "pod_cidrs"),
        ({"gateway_ip": "10.244.2.1"}, "gateway_ip"),
        ({"gateway_ip": "10.244.1.0"}, "gateway_ip"),
        ({"gateway_mac": "02:00:00"}, "gateway_mac"),
        ({"cluster_cidr": "nope"}, "cluster_cidr"),
        ({"mode": "bridged"}, "mode"),
        ({"tunnel_type": "gre"}, "tunnel_type"),
        ({"vni": 1 << 24}, "vni"),
        ({"service_cidr": "10.96.0.1/12"}, "service_cidr"),
        ({"mode": "routing"}, "uplink_mac"),
        ({"gateway_ofport": 32768}, "gateway_ofport"),
        ({"uplink_ofport": 2}, "ofports must differ"),
    ],
)
def test_bad_node_config_is_rejected_naming_the_key(changes, key):
    with pytest.raises(ValueError, match=key):
        replace(NODE, **changes)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"ofport": 5}, "ofport"),
        ({"ofport": 65280}, "ofport"),
        ({"mac": "zz:00:00:00:00:00"}, "mac"),
        ({"ips": ()}, "ips"),
        ({"ips": ("fd00::5",)}, r"ips\[0\]"),
    ],
)
def test_bad_pod_port_is_rejected_naming_the_key(changes, key):
    with pytest.raises(ValueError, match=key):
        replace(POD_A, **changes)


def test_bad_remote_node_is_rejected():
    with pytest.raises(ValueError, match="pod_cidrs"):
        replace(REMOTE, pod_cidrs="10.244.2.0/24")
    with pytest.raises(ValueError, match="uplink_mac"):
        flows_for_remote_node(replace(REMOTE, uplink_mac=None), ROUTED_NODE)


def test_keys_identify_objects():
    assert POD_A.key == "pod/c0ffee01/eth0"
    assert RemoteNode("n", "1.1.1.1", ("10.0.0.0/24",)).key == "node/n"
