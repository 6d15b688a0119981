"""The two kinds of benchmark node: Sluice's and the reference bridge plugin's.

A node is a ``slb-*`` netns. ``SluiceNode`` runs a private OVS (sandbox.ovs)
and sluice-controller inside it and has the installed ``sluice`` binary;
``BridgeNode`` only has Debian's Go ``bridge`` + ``host-local`` plugins, which
make a Linux bridge ``cni0``. Both expose the same plugin-call interface
(``binary``, ``conf``, ``env``) so a benchmark execs them identically.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from bench.common import REPO, TOOL_PATH, del_netns, in_ns, new_netns, stop_proc, wait_until
from cni import install
from sandbox.ovs import OvsInstance

CNI_DIR = Path("/usr/lib/cni")
CLUSTER_CIDR = "10.250.0.0/16"
READY_TIMEOUT = 30.0


class PluginNode:
    """A node netns plus one CNI plugin; subclasses say which binary and config."""

    kind = "?"

    def __init__(self, workdir: Path, tag: str, pod_cidr: str) -> None:
        self.workdir = workdir
        self.tag = tag
        self.pod_cidr = pod_cidr
        self.ns = ""

    @property
    def binary(self) -> Path:
        """The plugin executable a runtime would run."""
        raise NotImplementedError

    def conf(self) -> dict[str, Any]:
        """The network configuration sent on stdin."""
        raise NotImplementedError

    def cni_path(self) -> str:
        """CNI_PATH as the runtime sets it."""
        return str(CNI_DIR)

    def env(self, command: str, container_id: str, netns_path: str, pod: str) -> dict[str, str]:
        """The CNI_* environment of one call (CNI_ARGS as containerd sets them)."""
        args = (
            f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={pod};"
            f"K8S_POD_INFRA_CONTAINER_ID={container_id};K8S_POD_UID=uid-{pod}"
        )
        return {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns_path,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": self.cni_path(),
            "CNI_ARGS": args,
            "PATH": TOOL_PATH,
        }

    def call(self, command: str, container_id: str, pod_ns: str) -> dict[str, Any]:
        """One untimed call through ``ip netns exec`` (set-up, not measurement)."""
        env = self.env(command, container_id, f"/run/netns/{pod_ns}", pod_ns)
        proc = subprocess.run(
            ["ip", "netns", "exec", self.ns, str(self.binary)],
            input=json.dumps(self.conf()),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        out: dict[str, Any] = json.loads(proc.stdout) if proc.stdout.strip() else {}
        if proc.returncode != 0:
            raise RuntimeError(f"{self.kind} {command} failed: {proc.stdout} {proc.stderr}")
        return out

    def start(self) -> PluginNode:
        """Create the node netns."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ns = new_netns(self.tag)
        return self

    def stop(self) -> None:
        """Remove the node netns (links inside go with it)."""
        if self.ns:
            del_netns(self.ns)
            self.ns = ""


class BridgeNode(PluginNode):
    """Reference: Debian's ``bridge`` plugin (Linux bridge cni0) with ``host-local``."""

    kind = "bridge"

    @property
    def binary(self) -> Path:
        """/usr/lib/cni/bridge."""
        return CNI_DIR / "bridge"

    def conf(self) -> dict[str, Any]:
        """bridge on cni0 as the gateway, host-local on the same podCIDR size as Sluice's."""
        return {
            "cniVersion": "1.0.0",
            "name": "slb-ref",
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": True,
            "ipMasq": False,
            "mtu": 1450,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.pod_cidr}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": str(self.workdir / "ipam"),
            },
        }


class SluiceNode(PluginNode):
    """A node running a private OVS and sluice-controller, with the installed shim."""

    kind = "sluice"

    def __init__(self, workdir: Path, tag: str, pod_cidr: str, userspace_tso: bool = False) -> None:
        super().__init__(workdir, tag, pod_cidr)
        self.userspace_tso = userspace_tso
        self.ovs: OvsInstance | None = None
        self.controller: subprocess.Popen[str] | None = None

    @property
    def binary(self) -> Path:
        """The shim installed by ``cni.install`` (native when it can be built here)."""
        return self.workdir / "bin" / "sluice"

    @property
    def shim(self) -> str:
        """Which shim is installed: "native" or "python"."""
        return install.shim_kind(self.binary)

    @property
    def socket(self) -> Path:
        """The CNI server's socket."""
        return self.workdir / "run" / "cni.sock"

    def cni_path(self) -> str:
        """Sluice's bin dir, then the standard plugins (host-local)."""
        return f"{self.workdir / 'bin'}:{CNI_DIR}"

    def conf(self) -> dict[str, Any]:
        """The conflist's sluice entry."""
        return {
            "cniVersion": "1.0.0",
            "name": "sluice",
            "type": "sluice",
            "serverSocket": str(self.socket),
            "stateDir": str(self.workdir / "state"),
        }

    def controller_config(self) -> dict[str, Any]:
        """sluice-controller's YAML configuration (standalone, no API server)."""
        return {
            "nodeName": self.ns,
            "mode": "overlay",
            "ovsdb": self.ovs.db_remote if self.ovs else "",
            "podCIDR": self.pod_cidr,
            "clusterCIDR": CLUSTER_CIDR,
            "nodeIP": "192.0.2.10",
            "cni": {
                "serverSocket": str(self.socket),
                "stateDir": str(self.workdir / "state"),
                "binDir": str(self.workdir / "bin"),
            },
            "openflow": {"port": 6653},
            "logLevel": "info",
        }

    def start(self) -> SluiceNode:
        """Netns, OVS, shim, controller, its first flows; stops what it started on failure."""
        super().start()
        return self.start_services()

    def start_services(self) -> SluiceNode:
        """OVS, shim, controller and its first flows in the existing netns.

        # why separate from `start`: a multi-node benchmark wires the node
        # namespaces together (uplinks) before the controllers look for them.
        Stops everything, the netns included, on failure.
        """
        try:
            self.ovs = OvsInstance(self.workdir / "ovs", self.ns, self.userspace_tso).start()
            install.install_binary(self.workdir / "bin", sys.executable, install.build_native())
            cfg = self.workdir / "controller.yaml"
            cfg.write_text(yaml.safe_dump(self.controller_config()))
            self._start_controller(cfg)
            wait_until(self._programmed, READY_TIMEOUT, "the controller's first flows")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_controller(self, cfg: Path) -> None:
        log = open(self.workdir / "controller.log", "a")  # noqa: SIM115 — child keeps it
        with log:
            self.controller = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.ns,
                    sys.executable,
                    "-m",
                    "controller",
                    "-c",
                    str(cfg),
                ],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, "PATH": TOOL_PATH},
            )
        assert self.controller.stdout is not None
        line = self.controller.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"controller did not start; see {self.workdir / 'controller.log'}")

    def _programmed(self) -> bool:
        """Whether the controller has connected to br-int and installed the gw0 flows."""
        out = self.ofctl("-O", "OpenFlow13", "dump-flows", "br-int", "table=0,in_port=2")
        return "actions=" in out

    def stop(self) -> None:
        """Controller (by pid), OVS daemons (by pid), then the netns."""
        stop_proc(self.controller, grace=10.0)
        self.controller = None
        if self.ovs is not None:
            self.ovs.stop()
            self.ovs = None
        super().stop()

    def ofctl(self, *args: str) -> str:
        """ovs-ofctl against this node's OVS."""
        assert self.ovs is not None
        return self.ovs.ofctl(*args)

    def ofport(self, port: str) -> int:
        """The ofport of ``port`` on br-int."""
        assert self.ovs is not None
        return int(self.ovs.vsctl("get", "Interface", port, "ofport").strip())


def pod_ip(result: dict[str, Any]) -> str:
    """The pod's IPv4 address (no prefix) from a CNI ADD result."""
    return str(result["ips"][0]["address"]).split("/")[0]


def host_ifname(result: dict[str, Any]) -> str:
    """The host-side interface name from a CNI ADD result (the entry without sandbox)."""
    return next(i["name"] for i in result["interfaces"] if "sandbox" not in i)


def tx_checksum(ns: str) -> str:
    """``on``/``off``: TX checksum offload of eth0 in pod netns ``ns``."""
    for line in in_ns(ns, "ethtool", "-k", "eth0").splitlines():
        if line.startswith("tx-checksumming:"):
            return line.split(":", 1)[1].split()[0]
    return "?"
