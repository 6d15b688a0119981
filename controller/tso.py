"""Userspace TSO per datapath mode: the default that ovs-vswitchd is started with.

# why per mode: on the userspace (netdev) datapath, userspace TSO lets OVS pass
# 64 KiB TCP segments between ports instead of MTU-sized packets (same-node pod to
# pod ≈ 12 Gbit/s instead of ≈ 1 on the benchmark machine), and pods keep their
# checksum offload. But OVS 3.1 drops every offloaded packet it sends to a tunnel
# port ("Tunneling packets with HW offload flags is not supported"), so a node with
# a tunnel port (overlay, hybrid) must run without it. Routing and underlay have
# none. The kernel datapath ignores the setting. OVS reads
# `other_config:userspace-tso-enable` only when ovs-vswitchd starts
# (Documentation/topics/userspace-tso.rst: "requires restarting the daemon"), so
# deploy/ovs-start.sh and the sandbox decide it before starting the daemon.

`python -m controller.tso CONFIG` prints `true` or `false` for the controller
configuration CONFIG (its `mode` and `datapathType`; `auto` is resolved as the
controller does, by whether the openvswitch kernel module is loaded).
"""

from __future__ import annotations

import sys
from pathlib import Path

from controller.config import ConfigError, load

TUNNEL_MODES = ("overlay", "hybrid")
KERNEL_MODULE = Path("/sys/module/openvswitch")


def resolve_datapath(datapath_type: str, kernel_module: bool) -> str:
    """`system` or `netdev`: what `datapathType` becomes (`auto`: by the kernel module)."""
    if datapath_type != "auto":
        return datapath_type
    return "system" if kernel_module else "netdev"


def userspace_tso_default(mode: str, datapath_type: str) -> bool:
    """Whether ovs-vswitchd should run with userspace TSO for `mode` on `datapath_type`.

    True only on the netdev datapath in a mode without a tunnel port.
    """
    return datapath_type == "netdev" and mode not in TUNNEL_MODES


def main(argv: list[str]) -> int:
    """`CONFIG`: print `true`/`false`; 2 on a usage or configuration error."""
    if len(argv) != 1:
        print("usage: python -m controller.tso CONFIG", file=sys.stderr)
        return 2
    try:
        cfg = load(argv[0])
    except ConfigError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return 2
    datapath = resolve_datapath(cfg.datapath_type, KERNEL_MODULE.exists())
    print("true" if userspace_tso_default(cfg.mode, datapath) else "false")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
