"""A one-node test bed: a node netns with its own OVS and sluice-controller, and pods.

The CNI is exercised exactly as a runtime does it: the installed `sluice` binary
is executed with CNI_* variables and the configuration on stdin, inside the node's
network namespace; it forwards to the controller's CNI server.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from cni import install
from sandbox.ovs import OvsInstance

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30.0


def node_shim() -> Path | None:
    """The native shim the nodes install (built here), or None for the Python shim.

    SLUICE_TEST_SHIM=python runs the CNI tests through the Python shim instead.
    """
    if os.environ.get("SLUICE_TEST_SHIM", "native") == "python":
        return None
    return install.build_native()


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS`."""
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def in_netns(ns: str, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a command inside netns `ns` (no check)."""
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout
    )


@contextmanager
def netns(prefix: str) -> Iterator[str]:
    """A fresh named netns with lo up, removed afterwards."""
    name = f"{prefix}{secrets.token_hex(3)}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        ip("netns", "del", name, check=False)


class CniNode:
    """A node netns running OVS + sluice-controller; call the CNI like a runtime."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        pod_cidr: str,
        mode: str = "overlay",
        userspace_tso: bool = False,
    ) -> None:
        self.workdir = workdir
        self.name = name
        self.pod_cidr = pod_cidr
        self.bin_dir = workdir / "bin"
        self.state_dir = workdir / "state"
        self.socket = workdir / "run" / "cni.sock"
        self.ovs = OvsInstance(workdir / "ovs", netns=name, userspace_tso=userspace_tso)
        self.mode = mode
        self.controller: subprocess.Popen[str] | None = None

    def start(self) -> CniNode:
        """Start OVS, install the CNI binary, start the controller and wait for it."""
        self.ovs.start()
        install.install_binary(self.bin_dir, sys.executable, node_shim())
        cfg = {
            "nodeName": self.name,
            "mode": self.mode,
            "ovsdb": self.ovs.db_remote,
            "podCIDR": self.pod_cidr,
            "clusterCIDR": "10.250.0.0/16",
            "nodeIP": "192.0.2.10",
            "cni": {
                "serverSocket": str(self.socket),
                "stateDir": str(self.state_dir),
                "binDir": str(self.bin_dir),
            },
            "openflow": {"port": 6653},
            "logLevel": "debug",
        }
        (self.workdir / "controller.yaml").write_text(yaml.safe_dump(cfg))
        self.start_controller()
        return self

    def start_controller(self) -> None:
        """(Re)start sluice-controller in the node netns; wait until it serves."""
        log = open(self.workdir / "controller.log", "a")  # noqa: SIM115 — closed in stop
        self.controller = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.name,
                sys.executable,
                "-m",
                "controller",
                "-c",
                str(self.workdir / "controller.yaml"),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        assert self.controller.stdout is not None
        line = self.controller.stdout.readline()
        if "ready" not in line or time.monotonic() > deadline:
            self.stop_controller()
            raise RuntimeError(f"controller did not start: {self.log()}")

    def stop_controller(self) -> None:
        """Stop the controller by pid (SIGTERM, then SIGKILL)."""
        if self.controller is None:
            return
        self.controller.terminate()
        try:
            self.controller.wait(10)
        except subprocess.TimeoutExpired:
            self.controller.kill()
            self.controller.wait(10)
        self.controller = None

    def log(self) -> str:
        """The controller's log so far."""
        path = self.workdir / "controller.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        """Stop the controller and OVS."""
        self.stop_controller()
        self.ovs.stop()

    def conf(self, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
        """The plugin configuration as a runtime passes it."""
        return {
            "cniVersion": version,
            "name": "sluice",
            "type": "sluice",
            "serverSocket": str(self.socket),
            "stateDir": str(self.state_dir),
            **extra,
        }

    def cni(
        self,
        command: str,
        conf: dict[str, Any],
        container_id: str = "",
        netns_path: str = "",
        ifname: str = "eth0",
        cni_args: str = "",
        plugin: str = "sluice",
        drop: tuple[str, ...] = (),
    ) -> tuple[int, dict[str, Any]]:
        """Execute the installed plugin binary in the node netns; return (rc, JSON out)."""
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns_path,
            "CNI_IFNAME": ifname,
            "CNI_PATH": f"{self.bin_dir}:/usr/lib/cni",
            "CNI_ARGS": cni_args,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin",
        }
        for name in drop:
            env.pop(name, None)
        binary = (
            self.bin_dir / plugin
            if (self.bin_dir / plugin).exists()
            else Path("/usr/lib/cni", plugin)
        )
        proc = subprocess.run(
            ["ip", "netns", "exec", self.name, str(binary)],
            input=json.dumps(conf),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        out = json.loads(proc.stdout) if proc.stdout.strip() else {}
        return proc.returncode, out

    def pod_args(self, name: str, namespace: str = "default") -> str:
        """CNI_ARGS as containerd sets them, in a shuffled order."""
        return (
            f"K8S_POD_NAME={name};IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};"
            f"K8S_POD_UID=uid-{name};K8S_POD_INFRA_CONTAINER_ID=infra-{name}"
        )

    def ports(self) -> list[dict[str, Any]]:
        """Interfaces on br-int with their external_ids (read with ovs-vsctl)."""
        out = self.ovs.vsctl(
            "--format=json", "--", "--columns=name,ofport,external_ids", "list", "Interface"
        )
        rows = []
        for name, ofport, ext in json.loads(out)["data"]:
            rows.append({"name": name, "ofport": ofport, "external_ids": dict(ext[1])})
        return rows

    def pod_ports(self) -> list[dict[str, Any]]:
        """Interfaces that Sluice's CNI made."""
        return [p for p in self.ports() if p["external_ids"].get("sluice-owner") == "cni"]

    def numbered_pod_ports(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The pod ports once ovs-vswitchd has given each its ofport.

        ADD returns when OVSDB holds the port; vswitchd opens it just after.
        """
        deadline = time.monotonic() + timeout
        while True:
            ports = self.pod_ports()
            if all(isinstance(p["ofport"], int) and p["ofport"] > 0 for p in ports):
                return ports
            if time.monotonic() > deadline:
                return ports
            time.sleep(0.05)

    def leases(self) -> list[str]:
        """host-local lease files of the default IPAM."""
        base = self.state_dir / "ipam" / "sluice"
        return (
            sorted(p.name for p in base.iterdir() if p.name[0].isdigit()) if base.exists() else []
        )

    def host_links(self) -> list[str]:
        """Link names in the node netns."""
        out = ip("-n", self.name, "-o", "link", "show").stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
