"""The sandbox control plane: netns ``sl-cp`` with the fabric bridge, etcd and k8s masters.

Network: ``sl-cp`` holds the Linux bridge ``sl-fabric`` (198.51.100.1/24,
the apiserver's advertise address).  Every node netns is a veth port on that
bridge.  The root netns reaches it through the veth ``sl-host``
(198.51.100.254/24, peer ``host0`` on the bridge): that is how the host's
kubectl talks to the apiserver, and the only link of ours in the root netns.

# why a real fabric IP and not a relay to the host's loopback: the apiserver
must reach every kubelet (exec/logs) at the node's InternalIP.

``sl-cp`` also routes a second subnet, 203.0.113.0/24 (203.0.113.1 on
``sl-fabric``), for "far" nodes: a node there reaches the others only through
that router, as across a data-centre's L3 boundary.

``sl-legacy`` is a host on the fabric (198.51.100.50/24) that runs nothing of
Kubernetes or Sluice: underlay mode shows it reaching pods directly.

Processes (all in ``sl-cp``): etcd on the netns' loopback (127.0.0.1:2379,
so it never collides with anything in the root netns), kube-apiserver on
0.0.0.0:6443, kube-controller-manager and kube-scheduler (loopback only for
their own serving ports).  Logs: ``STATE/cp/logs/*.log``.
"""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sandbox import netns, pki
from sandbox.netns import Proc

CP_NETNS = "sl-cp"
FABRIC_BRIDGE = "sl-fabric"
FABRIC_PREFIX = "198.51.100"
APISERVER_IP = f"{FABRIC_PREFIX}.1"
HOST_LINK, HOST_PEER, HOST_IP = "sl-host", "host0", f"{FABRIC_PREFIX}.254"
API_PORT = 6443
API_URL = f"https://{APISERVER_IP}:{API_PORT}"
SERVICE_CIDR, SERVICE_IP = "10.96.0.0/16", "10.96.0.1"
CLUSTER_CIDR, NODE_CIDR_MASK = "10.244.0.0/16", "24"
ETCD_CLIENT, ETCD_PEER = "http://127.0.0.1:2379", "http://127.0.0.1:2380"
LEGACY_NETNS, LEGACY_PORT, LEGACY_IP = "sl-legacy", "fab-legacy", f"{FABRIC_PREFIX}.50"
# A second IP subnet on the same fabric, routed by sl-cp: "far" nodes live there
# (hybrid mode tunnels to them and routes to the nodes of the first subnet).
FAR_PREFIX = "203.0.113"
FAR_GATEWAY = f"{FAR_PREFIX}.1"


@dataclass(frozen=True)
class PodNetwork:
    """Where pod addresses come from: the cluster CIDR and each node's share (mask)."""

    cluster_cidr: str = CLUSTER_CIDR
    node_cidr_mask: str = NODE_CIDR_MASK


# why: underlay pods are fabric addresses, so the controller-manager hands out
# /28 ranges of the fabric's 198.51.100.128/26 (nodes and hosts keep .1-.127).
UNDERLAY_POD_NETWORK = PodNetwork(f"{FABRIC_PREFIX}.128/26", "28")
DEFAULT_POD_NETWORK = PodNetwork()


def pod_network(mode: str) -> PodNetwork:
    """The sandbox's pod network for a Sluice mode (underlay: a part of the fabric)."""
    return UNDERLAY_POD_NETWORK if mode == "underlay" else DEFAULT_POD_NETWORK


# why: with real kubelets the node lifecycle controller is wanted (it adds and
# removes the not-ready taints); the notes' "*,-nodelifecycle" is for kubelet-less
# nodes.  Override with ControlPlane(controllers="*,-nodelifecycle").
DEFAULT_CONTROLLERS = "*"
OnStart = Callable[[Proc], None]
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


@dataclass
class ControlPlane:
    """Paths and knobs of the control plane; methods are idempotent."""

    state_dir: Path
    bin_dir: Path
    controllers: str = DEFAULT_CONTROLLERS
    verbosity: int = 1
    pod_network: PodNetwork = DEFAULT_POD_NETWORK

    @property
    def pki_dir(self) -> Path:
        """Certificates and kubeconfigs."""
        return self.state_dir / "pki"

    @property
    def cp_dir(self) -> Path:
        """etcd data and control-plane logs."""
        return self.state_dir / "cp"

    @property
    def admin_kubeconfig(self) -> Path:
        """Kubeconfig for the host's kubectl (cluster-admin, via ``sl-host``)."""
        return self.state_dir / "admin.kubeconfig"

    def log(self, name: str) -> Path:
        """Log file of component *name*."""
        return self.cp_dir / "logs" / f"{name}.log"

    # ------------------------------------------------------------------ set-up

    def ensure_network(self) -> None:
        """netns sl-cp, bridge sl-fabric with the apiserver IP, host veth sl-host."""
        netns.ensure_netns(CP_NETNS)
        netns.ensure_bridge(FABRIC_BRIDGE, CP_NETNS)
        netns.ensure_address(FABRIC_BRIDGE, f"{APISERVER_IP}/24", CP_NETNS)
        netns.ensure_veth(HOST_PEER, CP_NETNS, HOST_LINK, None)
        netns.ensure_master(HOST_PEER, FABRIC_BRIDGE, CP_NETNS)
        netns.ensure_address(HOST_LINK, f"{HOST_IP}/24", None)
        netns.ensure_address(FABRIC_BRIDGE, f"{FAR_GATEWAY}/24", CP_NETNS)
        netns.ns_sysctl(CP_NETNS, "net.ipv4.ip_forward", "1")

    def ensure_legacy_host(self) -> None:
        """netns sl-legacy: a plain host on the fabric (LEGACY_IP/24, no route, no Sluice)."""
        netns.ensure_netns(LEGACY_NETNS)
        netns.ensure_veth(LEGACY_PORT, CP_NETNS, "eth0", LEGACY_NETNS)
        netns.ensure_master(LEGACY_PORT, FABRIC_BRIDGE, CP_NETNS)
        netns.ensure_address("eth0", f"{LEGACY_IP}/24", LEGACY_NETNS)
        # why: a veth hands partial checksums to its peer, which a physical wire never
        # carries; OVS's userspace datapath forwards them as they are and the nodes'
        # kernels drop the TCP segments. A real NIC fills them in: so does this host.
        netns.sh(["ip", "netns", "exec", LEGACY_NETNS, "ethtool", "-K", "eth0", "tx", "off"])

    def ensure_pki(self) -> None:
        """All control-plane certs plus kubeconfigs (admin one at admin_kubeconfig)."""
        pki.ensure_control_plane_pki(self.pki_dir, APISERVER_IP, SERVICE_IP)
        for stem in ("controller-manager", "scheduler", "kube-proxy"):
            pki.ensure_kubeconfig(self.pki_dir, stem, API_URL)
        pki.ensure_kubeconfig(self.pki_dir, "admin", API_URL, self.admin_kubeconfig)

    # ------------------------------------------------------------------ commands

    def etcd_cmd(self) -> list[str]:
        """etcd 3.4 (Debian) on the netns' loopback."""
        return [
            "etcd", "--name=sl-etcd", f"--data-dir={self.cp_dir / 'etcd'}",
            f"--listen-client-urls={ETCD_CLIENT}", f"--advertise-client-urls={ETCD_CLIENT}",
            f"--listen-peer-urls={ETCD_PEER}", f"--initial-advertise-peer-urls={ETCD_PEER}",
            f"--initial-cluster=sl-etcd={ETCD_PEER}", "--log-level=warn",
        ]  # fmt: skip

    def apiserver_cmd(self) -> list[str]:
        """kube-apiserver with Node,RBAC authz and kubelet client certs."""
        p = self.pki_dir
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={ETCD_CLIENT}",
            "--bind-address=0.0.0.0", f"--advertise-address={APISERVER_IP}",
            f"--secure-port={API_PORT}", "--insecure-port=0",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={p / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=true", "--profiling=false", f"--v={self.verbosity}",
        ]  # fmt: skip

    def controller_manager_cmd(self) -> list[str]:
        """kube-controller-manager: node CIDR allocation, SA tokens, CSR signing."""
        p, kc = self.pki_dir, str(self.pki_dir / "controller-manager.kubeconfig")
        return [
            str(self.bin_dir / "kube-controller-manager"),
            f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", "--port=0", "--leader-elect=false",
            f"--controllers={self.controllers}", "--use-service-account-credentials=true",
            "--allocate-node-cidrs=true", f"--cluster-cidr={self.pod_network.cluster_cidr}",
            f"--node-cidr-mask-size={self.pod_network.node_cidr_mask}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-private-key-file={p / 'sa.key'}", f"--root-ca-file={p / 'ca.crt'}",
            f"--cluster-signing-cert-file={p / 'ca.crt'}",
            f"--cluster-signing-key-file={p / 'ca.key'}",
            # why: the default /usr/libexec/kubernetes/... would be created on the host.
            f"--flex-volume-plugin-dir={self.cp_dir / 'volume-plugins'}",
            "--profiling=false", f"--v={self.verbosity}",
        ]  # fmt: skip

    def scheduler_cmd(self) -> list[str]:
        """kube-scheduler (default profile)."""
        kc = str(self.pki_dir / "scheduler.kubeconfig")
        return [
            str(self.bin_dir / "kube-scheduler"),
            f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", "--port=0", "--leader-elect=false",
            "--profiling=false", f"--v={self.verbosity}",
        ]  # fmt: skip

    def command(self, name: str) -> list[str]:
        """Command line of component *name* (one of COMPONENTS)."""
        return {
            "etcd": self.etcd_cmd,
            "kube-apiserver": self.apiserver_cmd,
            "kube-controller-manager": self.controller_manager_cmd,
            "kube-scheduler": self.scheduler_cmd,
        }[name]()

    # ------------------------------------------------------------------ run

    def ensure_running(self, procs: dict[str, Proc], on_start: OnStart) -> dict[str, Proc]:
        """Start each component not alive in *procs*; return the (updated) mapping.

        *on_start* is called with each new Proc at once, so the caller can
        record it in the state file before anything else can fail.
        """
        (self.cp_dir / "etcd").mkdir(parents=True, exist_ok=True)
        (self.cp_dir / "etcd").chmod(0o700)
        out = dict(procs)
        for name in COMPONENTS:
            old = out.get(name)
            if old is not None and netns.is_alive(old):
                continue
            out[name] = netns.start_process(name, self.command(name), self.log(name), CP_NETNS)
            on_start(out[name])
            if name == "kube-apiserver":
                # why: controller-manager and scheduler start fine before the
                # apiserver answers, but their logs fill with retries; waiting keeps
                # them readable and surfaces apiserver problems first.
                self.wait_ready()
        return out

    def kubectl(self, *args: str, check: bool = True, input_: str | None = None) -> str:
        """Run the sandbox's kubectl 1.20 as cluster-admin; return stdout."""
        cmd = [
            str(self.bin_dir / "kubectl"),
            f"--kubeconfig={self.admin_kubeconfig}",
            # why: kubectl caches discovery per host:port; a fresh cluster on the
            # same address must not reuse an old cluster's cache.
            f"--cache-dir={self.state_dir / 'kubectl-cache'}",
            *args,
        ]
        return netns.sh(cmd, check=check, input_=input_)

    def ssl_context(self) -> ssl.SSLContext:
        """TLS context trusting our CA and presenting the admin client cert."""
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        ctx.load_cert_chain(str(self.pki_dir / "admin.crt"), str(self.pki_dir / "admin.key"))
        return ctx

    def is_ready(self) -> bool:
        """True if GET /readyz (from the root netns, via sl-host) returns 200 "ok"."""
        try:
            with urllib.request.urlopen(
                f"{API_URL}/readyz", context=self.ssl_context(), timeout=2
            ) as resp:
                return resp.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Poll /readyz until 200; return seconds waited; raise TimeoutError."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.is_ready():
                return time.monotonic() - start
            time.sleep(0.5)
        log = self.log("kube-apiserver")
        raise TimeoutError(f"apiserver not ready after {timeout:.0f} s; see {log}")
