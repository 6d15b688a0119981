"""Install Sluice on a sandbox node the way the DaemonSet does on a real one.

Per node, inside its netns and private mount namespace: its own ovsdb-server and
ovs-vswitchd (userspace datapath, userspace TSO per the mode as deploy/ovs-start.sh
sets it: controller/tso.py), the CNI binary and conflist in the node's CNI
dirs (`python -m cni.install`, as the init container), and `sluice-controller`
with the same configuration keys as deploy/kubernetes/configmap.yaml. Every
daemon is recorded through `on_start`, so `sandbox down` stops it by pid.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from cni import install
from controller.tso import userspace_tso_default
from sandbox import netns
from sandbox.controlplane import SERVICE_CIDR, OnStart
from sandbox.netns import Proc
from sandbox.node import Node

OVS_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
HELPER_PLUGINS = ("host-local", "loopback", "portmap")
READY_TIMEOUT = 30.0


def ovs_dir(node: Node) -> Path:
    """Where the node's OVS keeps its database, sockets and logs (OVS_RUNDIR)."""
    return node.dir / "ovs"


def ovs_env(node: Node) -> dict[str, str]:
    """Environment that points OVS tools and daemons at the node's instance."""
    d = str(ovs_dir(node))
    return {"OVS_RUNDIR": d, "OVS_DBDIR": d, "OVS_LOGDIR": d, "OVS_SYSCONFDIR": d}


@dataclass(frozen=True)
class SluiceCni:
    """The sandbox's `install_cni` hook for Sluice; `mode` and `tunnel` as in the ConfigMap."""

    kubeconfig: Path
    mode: str = "overlay"
    tunnel: str = "vxlan"

    def __call__(self, node: Node, procs: dict[str, Proc], on_start: OnStart) -> None:
        ensure_ovs(node, procs, on_start, userspace_tso_default(self.mode, "netdev"))
        install_cni_files(node)
        cfg = write_controller_config(node, self.kubeconfig, self.mode, self.tunnel)
        ensure_daemon(
            node,
            procs,
            on_start,
            "sluice-controller",
            [sys.executable, "-m", "controller", "-c", str(cfg)],
        )


def _env(node: Node) -> dict[str, str]:
    return {**os.environ, **ovs_env(node), "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}


def ensure_daemon(
    node: Node, procs: dict[str, Proc], on_start: OnStart, name: str, cmd: list[str]
) -> bool:
    """Start `cmd` in the node's namespaces unless it runs; True if started."""
    old = procs.get(name)
    if old is not None and netns.is_alive(old):
        return False
    procs[name] = netns.start_process(name, cmd, node.log(name), node.netns, node.mntns, _env(node))
    on_start(procs[name])
    return True


def ensure_ovs(
    node: Node, procs: dict[str, Proc], on_start: OnStart, userspace_tso: bool = False
) -> None:
    """ovsdb-server and ovs-vswitchd of this node (started unless running).

    `userspace_tso` is written to `other_config:userspace-tso-enable` before
    ovs-vswitchd starts (a running one keeps what it started with).
    """
    d = ovs_dir(node)
    d.mkdir(parents=True, exist_ok=True)
    db = d / "conf.db"
    if not db.exists():
        subprocess.run(["ovsdb-tool", "create", str(db), str(OVS_SCHEMA)], check=True)
    sock = d / "db.sock"
    old = procs.get("ovsdb-server")
    if old is None or not netns.is_alive(old):
        sock.unlink(missing_ok=True)  # why: a stale socket would pass the readiness wait
    started = ensure_daemon(
        node,
        procs,
        on_start,
        "ovsdb-server",
        [
            "ovsdb-server",
            str(db),
            f"--remote=punix:{sock}",
            f"--pidfile={d}/ovsdb-server.pid",
            f"--log-file={d}/ovsdb-server.log",
            "-vconsole:off",
            "-vsyslog:off",
        ],
    )
    if started:
        _wait(lambda: sock.exists(), f"{sock}")
        _vsctl(node, "--no-wait", "init")
    tso = "true" if userspace_tso else "false"
    _vsctl(
        node, "--no-wait", "set", "Open_vSwitch", ".", f"other_config:userspace-tso-enable={tso}"
    )
    ensure_daemon(
        node,
        procs,
        on_start,
        "ovs-vswitchd",
        [
            "ovs-vswitchd",
            f"unix:{sock}",
            f"--pidfile={d}/ovs-vswitchd.pid",
            f"--log-file={d}/ovs-vswitchd.log",
            "-vconsole:off",
            "-vsyslog:off",
        ],
    )
    _wait(lambda: any(d.glob("ovs-vswitchd.*.ctl")), "ovs-vswitchd control socket")


def _vsctl(node: Node, *args: str) -> str:
    sock = ovs_dir(node) / "db.sock"
    return subprocess.run(
        ["ovs-vsctl", f"--db=unix:{sock}", "--timeout=10", *args],
        check=True,
        capture_output=True,
        text=True,
        env=_env(node),
    ).stdout


def find_interfaces(node: Node, *conditions: str) -> str:
    """``ovs-vsctl --format=json --columns=external_ids find Interface CONDITIONS...``
    on the node's OVS (conditions as ``external_ids:sluice-owner=cni``); the JSON text."""
    return _vsctl(node, "--format=json", "--columns=external_ids", "find", "Interface", *conditions)


def _wait(cond: object, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def install_cni_files(node: Node) -> None:
    """The CNI binary, its helper plugins and the conflist, in the node's CNI dirs."""
    node.cni_bin_dir.mkdir(parents=True, exist_ok=True)
    for plugin in HELPER_PLUGINS:
        if not (node.cni_bin_dir / plugin).exists():
            shutil.copy2(Path("/usr/lib/cni") / plugin, node.cni_bin_dir / plugin)
    install.install_binary(node.cni_bin_dir, "/usr/bin/python3")
    install.install_conflist(
        node.cni_conf_dir,
        server_socket=str(node.dir / "sluice" / "cni.sock"),
        state_dir=str(node.dir / "sluice" / "state"),
    )


def write_controller_config(node: Node, kubeconfig: Path, mode: str, tunnel: str) -> Path:
    """The controller's YAML: the ConfigMap's keys plus this node's paths."""
    cfg = {
        "nodeName": node.name,
        "mode": mode,
        "tunnelType": tunnel,
        "ovsdb": f"unix:{ovs_dir(node) / 'db.sock'}",
        "kubeconfig": str(kubeconfig),
        "clusterCIDR": node.cluster_cidr,
        "serviceCIDR": SERVICE_CIDR,
        "uplinkInterface": "eth0",
        "cni": {
            "serverSocket": str(node.dir / "sluice" / "cni.sock"),
            "stateDir": str(node.dir / "sluice" / "state"),
            "binDir": str(node.cni_bin_dir),
            "confDir": str(node.cni_conf_dir),
        },
    }
    path = node.dir / "sluice" / "controller.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
