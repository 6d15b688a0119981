"""sluice-controller: one process per node.

Loads and validates the configuration first, then: connects to OVSDB, ensures
br-int and gw0, and runs the CNI server. Without a kubeconfig and outside a
cluster it runs standalone on the configured podCIDR (tests, bare nodes).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from cni.ports import OvsdbPortStore
from controller import config as config_mod
from controller import nodesetup
from controller.cniservice import CniService
from ovsdb.connection import OvsdbClient

LOG = logging.getLogger("sluice.controller")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sluice-controller", description=__doc__)
    parser.add_argument("--config", "-c", required=True, help="YAML configuration file")
    return parser.parse_args(argv)


def run(cfg: config_mod.Config, stop: threading.Event) -> int:
    """Run the node controller until `stop` is set."""
    client = OvsdbClient(cfg.ovsdb, timeout=10.0)
    try:
        nodesetup.ensure_bridge(client, cfg)
        pod_cidrs = (cfg.pod_cidr,) if cfg.pod_cidr else ()
        if pod_cidrs:
            gateway = nodesetup.ensure_gateway(client, cfg, pod_cidrs[0])
            LOG.info("gateway %s ofport %d %s %s", *vars(gateway).values())
        node = nodesetup.node_network(client, cfg, pod_cidrs)
        cni_path = f"{cfg.cni.bin_dir}:/usr/lib/cni"
        service = CniService(cfg.cni.server_socket, node, OvsdbPortStore(client), cni_path)
        service.start()
        LOG.info(
            "CNI server on %s (mtu %d, tx checksum off: %s)",
            cfg.cni.server_socket,
            node.mtu,
            node.tx_checksum_off,
        )
        print("sluice-controller ready", flush=True)
        stop.wait()
        service.stop()
    finally:
        client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `sluice-controller` / `python -m controller`."""
    args = _parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        print(f"sluice-controller: invalid configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=cfg.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return run(cfg, stop)


if __name__ == "__main__":
    sys.exit(main())
