"""Small reusable pieces of flows: common matches and action sequences."""

from __future__ import annotations

from typing import Final

from flows import fields
from flows.ir import IN_PORT, Action, Load, Match, Move, Output, SetField
from flows.oxm import ETH_TYPE_ARP, ETH_TYPE_IP
from flows.pipeline import INGRESS_RULE

IP: Final = Match("eth_type", ETH_TYPE_IP)
ARP: Final = Match("eth_type", ETH_TYPE_ARP)
ARP_OP_REQUEST: Final = 1
ARP_OP_REPLY: Final = 2
ARP_REQUEST: Final = Match("arp_op", ARP_OP_REQUEST)

# why: the host (gw0) ARPs for remote pod IPs or next hops; any MAC it learns
# works because L3Forwarding routes on ip_dst only. A fixed, locally
# administered unicast MAC keeps that answer the same on every node.
GLOBAL_VIRTUAL_MAC: Final = "aa:bb:cc:dd:ee:ff"


def arp_reply(mac: str, ip: str | None = None) -> tuple[Action, ...]:
    """Return the actions that turn an ARP request into the reply "``ip`` is at ``mac``".

    The reply leaves by the port the request came in on. With ``ip`` given the
    flow must match ``arp_tpa=ip`` (the answered address is known); without it
    the addresses are swapped through ``fields.ARP_SCRATCH`` so one flow can
    answer a whole range.
    """
    head: tuple[Action, ...] = (
        Move("eth_src", "eth_dst"),
        SetField("eth_src", mac),
        SetField("arp_op", ARP_OP_REPLY),
        Move("arp_sha", "arp_tha"),
        SetField("arp_sha", mac),
    )
    if ip is not None:
        addresses: tuple[Action, ...] = (Move("arp_spa", "arp_tpa"), SetField("arp_spa", ip))
    else:
        scratch = fields.ARP_SCRATCH.field
        addresses = (Move("arp_tpa", scratch), Move("arp_spa", "arp_tpa"), Move(scratch, "arp_spa"))
    return (*head, *addresses, Output(IN_PORT))


def forward(destination: fields.RegMark, ofport: int) -> tuple[Action, ...]:
    """Return the L3Forwarding tail: remember ``ofport`` and ``destination``, go on.

    The port is output in the Output table, after ingress policy and the
    conntrack commit have seen the packet.
    """
    loads: tuple[Load, ...] = (
        fields.TARGET_OFPORT.load(ofport),
        destination.load(),
        fields.OUTPUT_PORT_SET.load(),
    )
    return (*loads, INGRESS_RULE.goto())
