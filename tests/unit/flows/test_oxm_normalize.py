"""``oxm.normalize``'s fast IPv4 path answers exactly as ``ipaddress`` would.

The reference below is the plain ``ipaddress`` model of an IPv4 match value
(what ``normalize`` did before it got a fast path for canonical dotted quads
and prefixes); both must return the same value and mask, or both raise.
"""

from __future__ import annotations

import ipaddress
import random

import pytest

from flows import oxm

FULL = 0xFFFFFFFF


def reference(value: oxm.FieldValue, mask: oxm.FieldValue | None) -> tuple[str, str | None]:
    """IPv4 normalization with ``ipaddress`` only; raises ValueError like normalize."""
    if isinstance(value, str) and "/" in value:
        if mask is not None:
            raise ValueError("prefix and mask")
        net = ipaddress.IPv4Network(value, strict=False)
        value, mask = str(net.network_address), str(net.netmask)
    if not isinstance(value, str) or (mask is not None and not isinstance(mask, str)):
        raise ValueError("not a string")
    number = int(ipaddress.IPv4Address(value))
    bits = FULL if mask is None else int(ipaddress.IPv4Address(mask))
    if bits == FULL:
        return str(ipaddress.IPv4Address(number)), None
    return str(ipaddress.IPv4Address(number & bits)), str(ipaddress.IPv4Address(bits))


EDGE_CASES = [
    "10.0.0.1",
    "0.0.0.0",
    "255.255.255.255",
    "10.0.0.1/24",
    "10.1.2.3/32",
    "10.1.2.3/31",
    "0.0.0.0/0",
    "1.2.3.4/33",
    "1.2.3.4/024",
    "1.2.3.4/+8",
    "1.2.3.4/ 8",
    "1.2.3.4/",
    "1.2.3.4/255.255.0.0",
    "1.2.3.4/0.0.255.255",
    "1.2.3.4/\u0668",
    "01.2.3.4",
    "1.2.3",
    "1",
    "256.1.1.1",
    " 1.2.3.4",
    "1.2.3.4 ",
    "a.b.c.d",
    "",
    "10.0.0.1/24/3",
]


def random_values(count: int) -> list[str]:
    rng = random.Random(7)
    out = []
    for _ in range(count):
        address = ".".join(str(rng.randrange(0, 300)) for _ in range(4))
        out += [address, f"{address}/{rng.randrange(0, 40)}"]
    return out


def outcome(fn, value, mask):
    try:
        return fn(value, mask)
    except ValueError:
        return "ValueError"


@pytest.mark.parametrize("mask", [None, "255.255.255.0", "255.0.255.0", "255.255.255.255"])
def test_ipv4_values_normalize_as_ipaddress_says(mask):
    for value in EDGE_CASES + random_values(500):
        got = outcome(lambda v, m: oxm.normalize("ip_dst", v, m), value, mask)
        assert got == outcome(reference, value, mask), (value, mask)


def test_non_string_ipv4_values_are_rejected():
    for value in (167772161, None, b"10.0.0.1"):
        with pytest.raises(ValueError):
            oxm.normalize("tun_dst", value)  # type: ignore[arg-type]
