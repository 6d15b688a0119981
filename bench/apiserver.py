"""A throw-away etcd + kube-apiserver v1.20.2 on the loopback of one netns (benchmarks only).

The binaries come from ``python -m sandbox.k8sbuild`` (cached under
``/var/cache/sluice/k8s-v1.20.2/bin``); certificates and the admin kubeconfig
from ``sandbox.pki``. Unlike the sandbox's control plane there is no fabric,
no controller-manager and no scheduler: objects are created complete (nodes
with their podCIDR and addresses, pods with ``nodeName``, their status
patched), which is all a node controller watches. Both processes are children
of this one and are stopped by pid.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import TOOL_PATH, enter_netns, stop_proc
from sandbox import pki
from sandbox.k8sbuild import DEFAULT_CACHE_DIR

BIN_DIR = DEFAULT_CACHE_DIR / "bin"
LOOPBACK = "127.0.0.1"
SERVICE_CIDR, SERVICE_IP = "10.96.0.0/16", "10.96.0.1"
READY_TIMEOUT = 120.0


def binaries_missing(bin_dir: Path = BIN_DIR) -> list[str]:
    """What of etcd / kube-apiserver cannot be found."""
    missing = [] if (bin_dir / "kube-apiserver").exists() else [str(bin_dir / "kube-apiserver")]
    on_path = any(Path(d, "etcd").exists() for d in TOOL_PATH.split(":"))
    return missing + ([] if on_path else ["etcd"])


class ApiServer:
    """etcd + kube-apiserver in netns ``netns``: ``start()``, use ``url``, ``stop()``.

    Args:
        workdir: certificates, etcd data and logs (created).
        netns: an existing named network namespace with ``lo`` up.
        port: the apiserver's secure port on the netns' loopback.
        etcd_dir: etcd's data directory (default ``workdir/etcd``); a tmpfs
            one spares etcd its fsyncs, which dominate bulk creation on disk.
    """

    def __init__(
        self,
        workdir: Path,
        netns: str,
        port: int = 6443,
        bin_dir: Path = BIN_DIR,
        etcd_dir: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.netns = netns
        self.port = port
        self.bin_dir = bin_dir
        self.etcd_dir = etcd_dir or workdir / "etcd"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """The apiserver's URL (reachable only from inside the netns)."""
        return f"https://{LOOPBACK}:{self.port}"

    @property
    def pki_dir(self) -> Path:
        """Certificates and keys."""
        return self.workdir / "pki"

    @property
    def kubeconfig(self) -> Path:
        """A cluster-admin kubeconfig (client certificate in ``system:masters``)."""
        return self.workdir / "admin.kubeconfig"

    def pid(self, name: str) -> int:
        """The pid of ``etcd`` or ``kube-apiserver``."""
        return self.procs[name].pid

    def ssl_context(self) -> ssl.SSLContext:
        """TLS trusting our CA and presenting the admin certificate."""
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        ctx.load_cert_chain(str(self.pki_dir / "admin.crt"), str(self.pki_dir / "admin.key"))
        return ctx

    def etcd_cmd(self) -> list[str]:
        """etcd 3.4 (Debian) on the netns' loopback."""
        client, peer = f"http://{LOOPBACK}:2379", f"http://{LOOPBACK}:2380"
        return [
            "etcd", "--name=bench", f"--data-dir={self.etcd_dir}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=bench={peer}", "--log-level=warn",
        ]  # fmt: skip

    def apiserver_cmd(self) -> list[str]:
        """kube-apiserver on loopback: RBAC, no kubelet flags, no ServiceAccount admission."""
        p = self.pki_dir
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://{LOOPBACK}:2379",
            f"--bind-address={LOOPBACK}", f"--advertise-address={LOOPBACK}",
            f"--secure-port={self.port}", "--insecure-port=0",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # why: a loopback advertise address is not a valid Endpoints IP.
            "--endpoint-reconciler-type=none",
            "--authorization-mode=RBAC",
            # why: without a controller-manager no "default" service account exists,
            # and the ServiceAccount admission plugin would reject every pod.
            "--disable-admission-plugins=ServiceAccount",
            "--profiling=false", "--v=1",
        ]  # fmt: skip

    def start(self) -> ApiServer:
        """Certificates, etcd, kube-apiserver; return once /readyz answers. Stops all on failure."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            pki.ensure_control_plane_pki(self.pki_dir, LOOPBACK, SERVICE_IP)
            pki.ensure_kubeconfig(self.pki_dir, "admin", self.url, self.kubeconfig)
            self.etcd_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._spawn("etcd", self.etcd_cmd())
            self._spawn("kube-apiserver", self.apiserver_cmd())
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 — the child keeps it
        with log:
            # why: `ip netns exec` execs in place, so the Popen pid is the daemon's.
            self.procs[name] = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, "PATH": TOOL_PATH},
                start_new_session=True,  # why: a Ctrl-C must not skip stop()
            )

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"{self.url}/readyz", context=self.ssl_context(), timeout=2
            ) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll /readyz from a thread inside the netns; raise if a process dies or time runs out."""
        deadline = time.monotonic() + timeout
        with ThreadPoolExecutor(1, initializer=enter_netns, initargs=(self.netns,)) as ex:
            while not ex.submit(self._ready).result():
                dead = [n for n, p in self.procs.items() if p.poll() is not None]
                if dead or time.monotonic() > deadline:
                    why = f"{dead} exited" if dead else f"not ready after {timeout:.0f} s"
                    raise RuntimeError(f"control plane {why}; see {self.workdir}/*.log")
                time.sleep(0.5)

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd (by pid). Idempotent."""
        for name in ("kube-apiserver", "etcd"):
            stop_proc(self.procs.pop(name, None), grace=10.0)

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
