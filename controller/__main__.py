"""sluice-controller: one process per node.

Loads and validates the configuration first, then: connects to OVSDB, ensures
br-int, gw0 and the tunnel port, and runs the os-ken app that programs br-int,
the CNI server and the REST API (controller/runtime.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

# why: python-ovs' poller imports eventlet only to ask whether it monkey-patched
# `select`, and importing eventlet pulls in dnspython (twice) and cryptography:
# ≈ 18 MiB of the controller's RSS. With os-ken's native hub (the default since
# os-ken 4.0) nothing is patched, and an eventlet that cannot be imported gives
# python-ovs the same answer. Must run before anything imports ovs.
if os.environ.get("OSKEN_HUB_TYPE", "native") == "native":
    sys.modules.setdefault("eventlet", None)  # type: ignore[arg-type]

from controller import config as config_mod  # noqa: E402
from controller import memtrim  # noqa: E402
from controller.runtime import run  # noqa: E402

LOG = logging.getLogger("sluice.controller")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sluice-controller", description=__doc__)
    parser.add_argument("--config", "-c", required=True, help="YAML configuration file")
    return parser.parse_args(argv)


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
    # why: pyroute2 logs every netlink message at DEBUG; that drowns our own logs.
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # why: glibc otherwise keeps ≈ 17 MiB of freed memory after start-up (controller/memtrim.py)
    memtrim.tune()
    memtrim.Trimmer().start()
    return run(cfg, stop)


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    # why: os-ken's hub threads are not daemon threads and cannot be joined or
    # killed from outside; after an orderly stop of our own parts, leave at once.
    os._exit(code)
