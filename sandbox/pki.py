"""Certificates and kubeconfigs for the sandbox cluster (openssl CLI, no Python dep).

Layout under ``pki_dir`` (``STATE/pki``):

* ``ca.crt``/``ca.key``: the one cluster CA (clients, apiserver, kubelets).
* ``sa.key``/``sa.pub``: service-account token signing pair.
* ``apiserver.*``: serving cert, SANs = fabric IP, 127.0.0.1, service IP, DNS names.
* ``apiserver-kubelet-client.*``: the apiserver's client cert towards kubelets.
* ``admin.*``, ``controller-manager.*``, ``scheduler.*``, ``kube-proxy.*``.
* ``node-NAME.*`` (kubelet client, ``system:node:NAME``/``system:nodes``) and
  ``node-NAME-serving.*`` (kubelet serving cert, SAN = node IP and name).
* ``*.kubeconfig``: one per client identity, certs embedded (self-contained).

Every function is idempotent: an existing cert/key pair is kept.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

DAYS = "3650"
CLUSTER_NAME = "sluice-sandbox"


@dataclass(frozen=True)
class CertSpec:
    """What to put in one leaf certificate."""

    name: str  # file stem under pki_dir
    cn: str
    org: str | None = None
    client: bool = True
    server: bool = False
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()


def _openssl(*args: str) -> None:
    """Run openssl quietly; raise with its stderr on failure."""
    res = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {res.stderr.strip()}")


def ensure_ca(pki_dir: Path) -> tuple[Path, Path]:
    """Create the self-signed cluster CA if missing; return (cert, key)."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    crt, key = pki_dir / "ca.crt", pki_dir / "ca.key"
    if not (crt.exists() and key.exists()):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", DAYS,
            "-keyout", str(key), "-out", str(crt), "-subj", f"/CN={CLUSTER_NAME}-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        )  # fmt: skip
        key.chmod(0o600)
    return crt, key


def ensure_sa_keypair(pki_dir: Path) -> tuple[Path, Path]:
    """Create the service-account RSA key pair if missing; return (private, public)."""
    key, pub = pki_dir / "sa.key", pki_dir / "sa.pub"
    if not (key.exists() and pub.exists()):
        _openssl("genrsa", "-out", str(key), "2048")
        _openssl("rsa", "-in", str(key), "-pubout", "-out", str(pub))
        key.chmod(0o600)
    return key, pub


def _extensions(spec: CertSpec) -> str:
    """OpenSSL v3 extension section text for *spec*."""
    usages = [u for u, on in (("clientAuth", spec.client), ("serverAuth", spec.server)) if on]
    lines = [
        "[v3]",
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={','.join(usages)}",
    ]
    alt = [f"DNS:{d}" for d in spec.dns] + [f"IP:{i}" for i in spec.ips]
    if alt:
        lines.append(f"subjectAltName={','.join(alt)}")
    return "\n".join(lines) + "\n"


def ensure_cert(pki_dir: Path, spec: CertSpec) -> tuple[Path, Path]:
    """Create a CA-signed leaf cert/key for *spec* if missing; return (cert, key)."""
    crt, key = pki_dir / f"{spec.name}.crt", pki_dir / f"{spec.name}.key"
    if crt.exists() and key.exists():
        return crt, key
    ca_crt, ca_key = ensure_ca(pki_dir)
    csr, ext = pki_dir / f"{spec.name}.csr", pki_dir / f"{spec.name}.ext"
    subj = f"/O={spec.org}/CN={spec.cn}" if spec.org else f"/CN={spec.cn}"
    ext.write_text(_extensions(spec))
    _openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
        "-out", str(csr), "-subj", subj,
    )  # fmt: skip
    # why: a random serial (instead of a ca.srl file) keeps parallel/partial runs safe.
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-set_serial", str(secrets.randbits(63)),
        "-days", DAYS, "-sha256", "-extfile", str(ext), "-extensions", "v3", "-out", str(crt),
    )  # fmt: skip
    key.chmod(0o600)
    csr.unlink()
    ext.unlink()
    return crt, key


def apiserver_spec(fabric_ip: str, service_ip: str) -> CertSpec:
    """Serving cert spec of kube-apiserver."""
    dns = (
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "localhost",
    )
    return CertSpec(
        "apiserver", "kube-apiserver", client=False, server=True, dns=dns,
        ips=(fabric_ip, "127.0.0.1", service_ip),
    )  # fmt: skip


CONTROL_PLANE_CLIENTS = (
    CertSpec("admin", "sluice-admin", org="system:masters"),
    # why: kubeadm gives the apiserver's kubelet client system:masters too; the
    # kubelet authorizes it through a SubjectAccessReview (webhook authz).
    CertSpec("apiserver-kubelet-client", "kube-apiserver-kubelet-client", org="system:masters"),
    CertSpec("controller-manager", "system:kube-controller-manager"),
    CertSpec("scheduler", "system:kube-scheduler"),
    CertSpec("kube-proxy", "system:kube-proxy"),
)


def ensure_control_plane_pki(pki_dir: Path, fabric_ip: str, service_ip: str) -> None:
    """CA, SA keys, apiserver serving cert and all control-plane client certs."""
    ensure_ca(pki_dir)
    ensure_sa_keypair(pki_dir)
    ensure_cert(pki_dir, apiserver_spec(fabric_ip, service_ip))
    for spec in CONTROL_PLANE_CLIENTS:
        ensure_cert(pki_dir, spec)


def ensure_node_pki(pki_dir: Path, node: str, node_ip: str) -> dict[str, Path]:
    """Kubelet client + serving certs for *node*; return their paths by role."""
    client = ensure_cert(pki_dir, CertSpec(f"node-{node}", f"system:node:{node}", "system:nodes"))
    serving = ensure_cert(
        pki_dir,
        CertSpec(
            f"node-{node}-serving", node, client=False, server=True, dns=(node,), ips=(node_ip,)
        ),
    )
    return {
        "client_crt": client[0],
        "client_key": client[1],
        "serving_crt": serving[0],
        "serving_key": serving[1],
    }


def _b64(path: Path) -> str:
    """Base64 of a file's bytes (kubeconfig *-data fields)."""
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_dict(server: str, ca: Path, crt: Path, key: Path, user: str) -> dict[str, object]:
    """A one-cluster, one-user kubeconfig with the certs embedded."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": _b64(crt), "client-key-data": _b64(key)},
            }
        ],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
    }


def write_kubeconfig(dest: Path, server: str, ca: Path, crt: Path, key: Path, user: str) -> Path:
    """Write a kubeconfig (mode 0600, atomically) to *dest*; return *dest*."""
    data = kubeconfig_dict(server, ca, crt, key, user)
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.chmod(0o600)
    tmp.rename(dest)
    return dest


def ensure_kubeconfig(pki_dir: Path, stem: str, server: str, dest: Path | None = None) -> Path:
    """Write (always, it is cheap) the kubeconfig for identity *stem*; return its path."""
    dest = dest or pki_dir / f"{stem}.kubeconfig"
    return write_kubeconfig(
        dest, server, pki_dir / "ca.crt", pki_dir / f"{stem}.crt", pki_dir / f"{stem}.key", stem
    )
