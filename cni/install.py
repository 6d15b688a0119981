"""Install Sluice's CNI binary and network configuration list on a node.

This is what the DaemonSet's init container runs (and the sandbox, per node):
`python -m cni.install --bin-dir /opt/cni/bin --conf-dir /etc/cni/net.d`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from cni import shim

CONFLIST_NAME = "10-sluice.conflist"
# why: containerd 1.6's libcni accepts results up to 1.0.0 and reads `cniVersion`;
# runtimes with libcni >= 1.2 pick the highest of `cniVersions` they speak (1.1.0
# brings GC and STATUS).
CONF_VERSION = "1.0.0"
CONF_VERSIONS = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def conflist(
    server_socket: str = shim.DEFAULT_SERVER_SOCKET,
    state_dir: str = shim.DEFAULT_STATE_DIR,
    portmap: bool = True,
) -> dict[str, Any]:
    """The network configuration list: sluice, then portmap for hostPort."""
    plugins: list[dict[str, Any]] = [
        {"type": "sluice", "serverSocket": server_socket, "stateDir": state_dir}
    ]
    if portmap:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
    return {
        "cniVersion": CONF_VERSION,
        "cniVersions": CONF_VERSIONS,
        "name": "sluice",
        "plugins": plugins,
    }


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def install_binary(bin_dir: Path, interpreter: str | None = None) -> Path:
    """Write the `sluice` binary (the standard-library-only shim) into `bin_dir`."""
    python = interpreter or shutil.which("python3") or sys.executable
    source = Path(shim.__file__).read_text().split("\n", 1)[1]
    target = bin_dir / "sluice"
    _atomic_write(target, f"#!{python} -IS\n{source}".encode(), 0o755)
    return target


def install_conflist(conf_dir: Path, **kwargs: Any) -> Path:
    """Write the conflist into `conf_dir` (atomically: runtimes watch the directory)."""
    target = conf_dir / CONFLIST_NAME
    _atomic_write(target, json.dumps(conflist(**kwargs), indent=2).encode() + b"\n", 0o644)
    return target


def main(argv: list[str] | None = None) -> int:
    """Command line: install binary and conflist."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bin-dir", default="/opt/cni/bin", type=Path)
    parser.add_argument("--conf-dir", default="/etc/cni/net.d", type=Path)
    parser.add_argument("--server-socket", default=shim.DEFAULT_SERVER_SOCKET)
    parser.add_argument("--state-dir", default=shim.DEFAULT_STATE_DIR)
    parser.add_argument("--interpreter", default=None)
    parser.add_argument("--no-portmap", action="store_true")
    args = parser.parse_args(argv)
    print(install_binary(args.bin_dir, args.interpreter))
    print(
        install_conflist(
            args.conf_dir,
            server_socket=args.server_socket,
            state_dir=args.state_dir,
            portmap=not args.no_portmap,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
