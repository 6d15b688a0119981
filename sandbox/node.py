"""One sandbox node: a netns on the fabric with its own containerd, kubelet and kube-proxy.

Per node NAME: netns ``sl-NAME`` (eth0 on the fabric, ``ip_forward=1`` inside
only); a persistent private mount namespace shared by containerd, kubelet and
kube-proxy, with bind mounts on /var/log, /var/lib/kubelet, /var/lib/cni and
/run/containerd (# why: kubelet hard-codes /var/log/pods, which it GCs, and the
device-plugin dir; containerd 1.6 hard-codes /var/lib/cni/results and
/run/containerd/s); cgroup ``/kp-NAME`` in every hierarchy (kubelet cgroupRoot,
so kubelets never take each other's pod cgroups for orphans); everything else
under ``STATE/nodes/NAME``.  Directory map: docs/sandbox.md.

The pod network is a hook ``install_cni(node)`` called once the Node object
has a podCIDR; :func:`reference_cni` (Debian's bridge + host-local) is the
stand-in until Sluice's own node set-up replaces it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sandbox import images, netns, pki
from sandbox.controlplane import (
    API_URL,
    APISERVER_IP,
    CLUSTER_CIDR,
    CP_NETNS,
    FABRIC_BRIDGE,
    FABRIC_PREFIX,
    FAR_GATEWAY,
    FAR_PREFIX,
    ControlPlane,
    OnStart,
)
from sandbox.netns import Proc

CGROUP_FS = Path("/sys/fs/cgroup")
REFERENCE_CNI_DIR = Path("/usr/lib/cni")
BIND_MOUNTS = {
    "/var/log": "var-log",
    "/var/lib/kubelet": "kubelet",
    "/var/lib/cni": "var-lib-cni",
    "/run/containerd": "run-containerd",
}


# why each CRI knob: restrict_oom_score_adj (no CAP_SYS_RESOURCE here, runc fails
# otherwise), netns_mounts_under_state_dir (pod netns stay in the node's dirs),
# SystemdCgroup=false (no systemd; kubelet uses cgroupfs), per-node CNI dirs.
CONTAINERD_TOML = """version = 2
root = "{dir}/root"
state = "{dir}/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[{cri}]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{cni_conf}"
  max_conf_num = 1
"""

KUBELET_BASE: dict[str, object] = {
    "apiVersion": "kubelet.config.k8s.io/v1beta1",
    "kind": "KubeletConfiguration",
    "port": 10250,
    "readOnlyPort": 0,
    "healthzBindAddress": "127.0.0.1",
    "cgroupDriver": "cgroupfs",
    "failSwapOn": False,
    "oomScoreAdj": 0,  # why: lowering it needs CAP_SYS_RESOURCE, absent here
    "authorization": {"mode": "Webhook"},
    # why: imported images cannot be pulled back, so image GC must never run.
    "imageGCHighThresholdPercent": 100,
    "imageGCLowThresholdPercent": 99,
    "evictionHard": {
        "memory.available": "100Mi",
        "nodefs.available": "1%",
        "nodefs.inodesFree": "1%",
        "imagefs.available": "1%",
    },
    "resolvConf": "/etc/resolv.conf",
    "serializeImagePulls": False,
}


@dataclass
class Node:
    """Static description of a node plus its idempotent set-up steps."""

    name: str
    index: int
    state_dir: Path
    bin_dir: Path
    verbosity: int = 1
    pod_cidr: str | None = None
    cluster_cidr: str = CLUSTER_CIDR  # the controller-manager's (kube-proxy's --cluster-cidr)
    far: bool = False  # on the routed second subnet (FAR_PREFIX) instead of the fabric's
    # Derived in __post_init__ (names and paths; see the module docstring):
    netns: str = field(init=False)  # sl-NAME
    ip: str = field(init=False)  # InternalIP, 198.51.100.(10+i) (far: 203.0.113.(10+i))
    fabric_port: str = field(init=False)  # veth end on sl-fabric (in sl-cp)
    dir: Path = field(init=False)  # STATE/nodes/NAME
    mntns: Path = field(init=False)  # file pinning the private mount ns
    cgroup_root: str = field(init=False)  # kubelet cgroupRoot, /kp-NAME
    containerd_sock: Path = field(init=False)  # a file: reachable from any netns
    cni_conf_dir: Path = field(init=False)  # read by this node's containerd
    cni_bin_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        """Derive names and paths from name/index/state_dir."""
        self.netns = f"sl-{self.name}"
        self.ip = f"{FAR_PREFIX if self.far else FABRIC_PREFIX}.{10 + self.index}"
        self.fabric_port = f"fab-{self.name}"
        self.dir = self.state_dir / "nodes" / self.name
        self.mntns = self.state_dir / "mntns" / self.name
        self.cgroup_root = f"/kp-{self.name}"
        self.containerd_sock = self.dir / "containerd" / "containerd.sock"
        self.cni_conf_dir = self.dir / "cni" / "net.d"
        self.cni_bin_dir = self.dir / "cni" / "bin"

    def log(self, name: str) -> Path:
        """Log file of daemon *name*."""
        return self.dir / "logs" / f"{name}.log"

    # ------------------------------------------------------------------ host set-up

    def ensure_network(self) -> None:
        """netns, veth into the fabric, address, default route, ip_forward (inside only)."""
        netns.ensure_netns(self.netns)
        netns.ensure_veth(self.fabric_port, CP_NETNS, "eth0", self.netns)
        netns.ensure_master(self.fabric_port, FABRIC_BRIDGE, CP_NETNS)
        netns.ensure_address("eth0", f"{self.ip}/24", self.netns)
        netns.ensure_default_route(FAR_GATEWAY if self.far else APISERVER_IP, self.netns)
        netns.ns_sysctl(self.netns, "net.ipv4.ip_forward", "1")
        # why: a ClusterIP answered by a pod on the same Linux bridge needs the
        # reply to pass iptables to be un-DNATed (per-netns sysctl on this kernel).
        netns.ns_sysctl(self.netns, "net.bridge.bridge-nf-call-iptables", "1")

    def cgroup_dirs(self) -> list[Path]:
        """The node's cgroupRoot in every mounted hierarchy (v1 and the unified one)."""
        return [h / self.cgroup_root.lstrip("/") for h in cgroup_hierarchies()]

    def ensure_cgroups(self) -> list[Path]:
        """Create /kp-NAME everywhere (cpuset: cpus/mems copied from the parent)."""
        made = self.cgroup_dirs()
        for path in made:
            path.mkdir(exist_ok=True)
            if path.parent.name == "cpuset":
                for key in ("cpuset.cpus", "cpuset.mems"):
                    if not (path / key).read_text().strip():
                        (path / key).write_text((path.parent / key).read_text())
        return made

    def ensure_mounts(self) -> list[Path]:
        """Pin the mount ns and make the bind mounts; return host dirs created for them."""
        created = []
        for target in BIND_MOUNTS:
            if not Path(target).exists():
                Path(target).mkdir(parents=True)
                created.append(Path(target))
        netns.ensure_private_dir(self.mntns.parent)
        netns.ensure_mount_ns(self.mntns)
        for target, sub in BIND_MOUNTS.items():
            netns.ensure_bind_mount_in(self.mntns, self.dir / sub, Path(target))
        return created

    # ------------------------------------------------------------------ config files

    def write_containerd_config(self) -> Path:
        """containerd 1.6 config: private root/state/socket, CRI with per-node CNI dirs."""
        c = self.dir / "containerd"
        for d in (c / "root", c / "state", self.cni_conf_dir, self.cni_bin_dir):
            d.mkdir(parents=True, exist_ok=True)
        path = c / "config.toml"
        path.write_text(
            CONTAINERD_TOML.format(
                dir=c,
                sock=self.containerd_sock,
                pause=images.PAUSE_IMAGE,
                cni_bin=self.cni_bin_dir,
                cni_conf=self.cni_conf_dir,
                cri='plugins."io.containerd.grpc.v1.cri"',
            )
        )
        return path

    def write_kubelet_config(self, certs: dict[str, Path], nodes_total: int) -> Path:
        """KubeletConfiguration: KUBELET_BASE + this node's address, cgroup, certs, reserve."""
        cpu_m = (os.cpu_count() or 1) * 1000
        mem_mi = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        cfg = {
            **KUBELET_BASE,
            "address": self.ip,
            "cgroupRoot": self.cgroup_root,
            "tlsCertFile": str(certs["serving_crt"]),
            "tlsPrivateKeyFile": str(certs["serving_key"]),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.state_dir / "pki" / "ca.crt")},
            },
            # why: every node reports the whole machine; reserve all but 1/N of it
            # so the scheduler does not overcommit the machine N times.
            "systemReserved": {
                "cpu": f"{cpu_m - cpu_m // nodes_total}m",
                "memory": f"{mem_mi - mem_mi // nodes_total}Mi",
            },
        }
        path = self.dir / "kubelet-config.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def ensure_config(self, pki_dir: Path, nodes_total: int) -> None:
        """Certificates, kubeconfig, containerd and kubelet configs for this node."""
        certs = pki.ensure_node_pki(pki_dir, self.name, self.ip)
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        pki.write_kubeconfig(
            self.dir / "kubelet.kubeconfig", API_URL, pki_dir / "ca.crt",
            certs["client_crt"], certs["client_key"], f"system:node:{self.name}",
        )  # fmt: skip
        self.write_containerd_config()
        self.write_kubelet_config(certs, nodes_total)

    # ------------------------------------------------------------------ commands

    def containerd_cmd(self) -> list[str]:
        """containerd with the node's config."""
        return ["containerd", "--config", str(self.dir / "containerd" / "config.toml")]

    def kubelet_cmd(self) -> list[str]:
        """kubelet talking CRI to the node's containerd."""
        return [
            str(self.bin_dir / "kubelet"),
            f"--config={self.dir / 'kubelet-config.yaml'}",
            f"--kubeconfig={self.dir / 'kubelet.kubeconfig'}",
            "--container-runtime=remote",
            f"--container-runtime-endpoint=unix://{self.containerd_sock}",
            f"--root-dir={self.dir / 'kubelet'}",
            f"--cert-dir={self.dir / 'kubelet-pki'}",
            f"--node-ip={self.ip}",
            f"--hostname-override={self.name}",
            f"--pod-infra-container-image={images.PAUSE_IMAGE}",
            # why: the default /usr/libexec/kubernetes/... would be created on the host.
            f"--volume-plugin-dir={self.dir / 'volume-plugins'}",
            f"--v={self.verbosity}",
        ]

    def kube_proxy_cmd(self) -> list[str]:
        """kube-proxy in iptables mode; leaves conntrack sysctls alone."""
        return [
            str(self.bin_dir / "kube-proxy"),
            f"--kubeconfig={self.state_dir / 'pki' / 'kube-proxy.kubeconfig'}",
            f"--hostname-override={self.name}",
            f"--bind-address={self.ip}",
            "--proxy-mode=iptables",
            f"--cluster-cidr={self.cluster_cidr}",
            "--conntrack-max-per-core=0",
            "--conntrack-tcp-timeout-established=0",
            "--conntrack-tcp-timeout-close-wait=0",
            "--oom-score-adj=0",
            "--metrics-bind-address=127.0.0.1:10249",
            "--healthz-bind-address=127.0.0.1:10256",
            f"--v={self.verbosity}",
        ]

    # ------------------------------------------------------------------ run

    def _ensure(self, procs: dict[str, Proc], name: str, cmd: list[str], on_start: OnStart) -> bool:
        """Start daemon *name* in the node's namespaces unless alive; True if started."""
        old = procs.get(name)
        if old is not None and netns.is_alive(old):
            return False
        procs[name] = netns.start_process(name, cmd, self.log(name), self.netns, self.mntns)
        on_start(procs[name])
        return True

    def wait_containerd(self, timeout: float = 30.0) -> None:
        """Wait until ``ctr version`` answers on the node's socket."""
        deadline = time.monotonic() + timeout
        cmd = ["ctr", "--address", str(self.containerd_sock), "version"]
        while time.monotonic() < deadline:
            if subprocess.run(cmd, capture_output=True).returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError(f"containerd of {self.name} not up; see {self.log('containerd')}")

    def start_runtime(
        self, procs: dict[str, Proc], image_tars: dict[str, Path], on_start: OnStart
    ) -> None:
        """containerd (+ image import) and kubelet; the kubelet then registers the Node."""
        self._ensure(procs, "containerd", self.containerd_cmd(), on_start)
        self.wait_containerd()
        images.ensure_imported(image_tars, self.containerd_sock)
        self._ensure(procs, "kubelet", self.kubelet_cmd(), on_start)

    def wait_pod_cidr(self, cp: ControlPlane, timeout: float = 120.0) -> str:
        """Poll the Node object until spec.podCIDR is set; store and return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = cp.kubectl(
                "get", "node", self.name, "-o", "jsonpath={.spec.podCIDR}", check=False
            ).strip()
            if out:
                self.pod_cidr = out
                return out
            time.sleep(0.5)
        raise TimeoutError(f"node {self.name} got no podCIDR; see {self.log('kubelet')}")

    def start_network(
        self, procs: dict[str, Proc], cp: ControlPlane, install_cni: InstallCni, on_start: OnStart
    ) -> None:
        """Once the podCIDR is known: install the CNI (hook) and start kube-proxy."""
        self.wait_pod_cidr(cp)
        install_cni(self, procs, on_start)
        self._ensure(procs, "kube-proxy", self.kube_proxy_cmd(), on_start)

    def daemon_pids(self) -> list[int]:
        """Pids in the node's mount ns: its daemons plus the re-parented containerd shims."""
        inode = netns.ns_inode(self.mntns)
        return netns.pids_in_ns("mnt", inode) if inode else []


# install_cni(node, procs, on_start): may start daemons of its own (recorded through
# on_start so `down` stops them).
InstallCni = Callable[[Node, dict[str, Proc], OnStart], None]


def cgroup_hierarchies() -> list[Path]:
    """Mounted cgroup hierarchies under /sys/fs/cgroup (v1 controllers and unified)."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            target = Path(fields[4])
            if fstype in ("cgroup", "cgroup2") and target.parent == CGROUP_FS:
                found.append(target)
    if not found and (CGROUP_FS / "cgroup.controllers").exists():
        found.append(CGROUP_FS)  # pure cgroup v2 host
    return found


def reference_conflist(pod_cidr: str, ipam_dir: Path) -> dict[str, object]:
    """The bridge (cni0, gateway, masquerade, hairpin) + host-local conflist for a node."""
    bridge = {
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": True,
        "ipMasq": True,
        "hairpinMode": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": pod_cidr}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": str(ipam_dir),
        },
    }
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}}
    # why 0.4.0: containerd 1.6's libcni takes results up to 1.0.0 and Debian's
    # plugins speak 0.4.0 and 1.0.0; 0.4.0 also works with older tooling.
    return {"cniVersion": "0.4.0", "name": "sandbox-bridge", "plugins": [bridge, portmap]}


def reference_cni(
    node: Node, procs: dict[str, Proc] | None = None, on_start: OnStart | None = None
) -> None:
    """Install Debian's bridge + host-local (+ loopback, portmap) on the node's podCIDR.

    Idempotent: plugins are copied if missing and the conflist is rewritten
    only when its content changes (containerd reloads the conf dir on change).
    """
    if node.pod_cidr is None:
        raise ValueError(f"node {node.name} has no podCIDR yet")
    node.cni_bin_dir.mkdir(parents=True, exist_ok=True)
    for plugin in ("bridge", "host-local", "loopback", "portmap"):
        dest = node.cni_bin_dir / plugin
        if not dest.exists():
            shutil.copy2(REFERENCE_CNI_DIR / plugin, dest)
    conf = reference_conflist(node.pod_cidr, node.dir / "cni" / "ipam")
    text = json.dumps(conf, indent=2) + "\n"
    path = node.cni_conf_dir / "10-sandbox-bridge.conflist"
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.rename(path)
