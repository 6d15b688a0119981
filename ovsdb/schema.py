"""Names shared by everything that reads or writes Sluice's OVSDB rows.

OVSDB ``external_ids`` are the durable record of what Sluice plugged in: the
controller rebuilds its memory from them at start-up, CNI DEL and GC find ports
through them. Keep every key here so readers and writers never drift apart.
"""

from __future__ import annotations

from typing import Final

BRIDGE: Final = "br-int"
GATEWAY_PORT: Final = "gw0"
TUNNEL_PORT: Final = "tun0"

# Fixed OpenFlow port numbers requested for the node's infrastructure ports.
TUNNEL_OFPORT: Final = 1
GATEWAY_OFPORT: Final = 2
UPLINK_OFPORT: Final = 3
# why: pods get ofport_request in a high range so infrastructure ports and pods
# never compete and a pod's number survives an ovs-vswitchd restart.
POD_OFPORT_MIN: Final = 32768
POD_OFPORT_MAX: Final = 65279  # OFPP_MAX for OpenFlow 1.0 is 0xff00

# Interface.external_ids keys written by the CNI server for a pod port.
OWNER: Final = "sluice-owner"  # value OWNER_CNI marks ports that Sluice's CNI made
OWNER_CNI: Final = "cni"
CONTAINER_ID: Final = "sluice-container-id"
IF_NAME: Final = "sluice-if-name"
POD_NAMESPACE: Final = "sluice-pod-namespace"
POD_NAME: Final = "sluice-pod-name"
POD_UID: Final = "sluice-pod-uid"
IPS: Final = "sluice-ips"  # comma-separated CIDRs, e.g. "10.244.1.5/24"
MAC: Final = "sluice-mac"  # the pod-side interface MAC
NETNS: Final = "sluice-netns"

# Bridge.external_ids keys written by the controller.
FLOW_ROUND: Final = "sluice-flow-round"
POD_CIDR: Final = "sluice-pod-cidr"  # the node's podCIDR, as last learnt
NODE_IP: Final = "sluice-node-ip"  # the node's transport IP, as last learnt
