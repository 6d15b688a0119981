"""Install Sluice's CNI binary and network configuration list on a node.

This is what the DaemonSet's init container runs (and the sandbox, per node):
`python -m cni.install --bin-dir /opt/cni/bin --conf-dir /etc/cni/net.d`.

The binary is the native shim (cni/shim.c, built by `make cni-shim`) when one is
given with `--native` and answers VERSION, else the standard-library-only Python
shim (cni/shim.py). Both speak the same protocol to the CNI server.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
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
REPO = Path(__file__).resolve().parents[1]
NATIVE_BUILD = Path("build/cni/sluice")
_ELF_MAGIC = b"\x7fELF"


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


def install_binary(
    bin_dir: Path, interpreter: str | None = None, native: Path | None = None
) -> Path:
    """Write the `sluice` binary into `bin_dir`: `native` if it runs, else the Python shim."""
    target = bin_dir / "sluice"
    if native is not None and native_runs(native):
        _atomic_write(target, native.read_bytes(), 0o755)
        return target
    python = interpreter or shutil.which("python3") or sys.executable
    source = Path(shim.__file__).read_text().split("\n", 1)[1]
    _atomic_write(target, f"#!{python} -IS\n{source}".encode(), 0o755)
    return target


def native_runs(binary: Path) -> bool:
    """Whether `binary` executes here and answers VERSION with the shim's versions."""
    try:
        proc = subprocess.run(
            [str(binary)],
            input=b'{"cniVersion": "1.0.0"}',
            env={"CNI_COMMAND": "VERSION"},
            capture_output=True,
            timeout=10,
            check=False,
        )
        versions = json.loads(proc.stdout)["supportedVersions"]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
        return False
    return proc.returncode == 0 and versions == list(shim.SUPPORTED_VERSIONS)


def build_native(repo: Path = REPO) -> Path | None:
    """`make cni-shim` in a source checkout; the built binary, or None when it cannot be built.

    # why: an installed package has no Makefile or C source, and a node image may
    # have no compiler; the caller then installs the Python shim.
    """
    if not (repo / "Makefile").is_file() or not (repo / "cni" / "shim.c").is_file():
        return None
    if shutil.which("make") is None:
        return None
    try:
        proc = subprocess.run(
            ["make", "-s", "-C", str(repo), "cni-shim"], capture_output=True, timeout=120
        )
    except (OSError, subprocess.SubprocessError):
        return None
    binary = repo / NATIVE_BUILD
    return binary if proc.returncode == 0 and binary.is_file() else None


def shim_kind(binary: Path) -> str:
    """ "native" or "python": which shim an installed `sluice` binary is."""
    with open(binary, "rb") as f:
        return "native" if f.read(4) == _ELF_MAGIC else "python"


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
    parser.add_argument(
        "--native", default=None, type=Path, help="the native shim (make cni-shim), if it runs"
    )
    parser.add_argument("--no-portmap", action="store_true")
    args = parser.parse_args(argv)
    binary = install_binary(args.bin_dir, args.interpreter, args.native)
    if args.native is not None and shim_kind(binary) != "native":
        print(f"{args.native} does not run here: installed the Python shim", file=sys.stderr)
    print(binary)
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
