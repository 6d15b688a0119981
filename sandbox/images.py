"""Two local OCI images built from busybox-static, imported with ``ctr``; no registry.

* ``localhost/sluice/pause:latest``: the pod sandbox image; a shell loop that
  sleeps forever and exits 0 on SIGTERM/SIGINT.
* ``localhost/sluice/workload:latest``: busybox (``ping``, ``nc``, ``wget``,
  ``sh``, ``ip`` …) plus ``/bin/agnhost-lite``, a tiny static Go program.  Its
  default command serves the pod's hostname on TCP *and* UDP ports 80 and 81
  (the upstream netpol e2e ``agnhost serve-hostname --tcp --udp --http=false``
  behaviour) and, via busybox ``httpd``, on HTTP port 8080 (for ``wget``).
  Probe with ``agnhost-lite connect [--udp] [--timeout S] HOST:PORT``, which
  prints the remote hostname and exits 0, or exits 1.

# why agnhost-lite: Debian's busybox-static has no tcpsvd/udpsvd and its ``nc``
has no UDP mode (checked: ``busybox --list``), so busybox alone cannot serve or
probe UDP.  The Go 1.19 toolchain is already installed for the Kubernetes
build, and a 60-line static Go binary is the smallest thing that does both.

Tarballs are cached in ``/var/cache/sluice/images`` (rebuilt when missing).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

from sandbox import k8sbuild

PAUSE_IMAGE = "localhost/sluice/pause:latest"
WORKLOAD_IMAGE = "localhost/sluice/workload:latest"
DEFAULT_IMAGE_DIR = Path("/var/cache/sluice/images")
BUSYBOX = Path("/bin/busybox")

PAUSE_CMD = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]
WORKLOAD_SCRIPT = """#!/bin/sh
# Default command of localhost/sluice/workload: hostname on TCP+UDP 80/81, HTTP 8080.
mkdir -p /www && hostname > /www/index.html
httpd -p 8080 -h /www
echo "$(hostname): serving hostname on tcp+udp 80 81, http 8080"
exec /bin/agnhost-lite serve-hostname 80 81
"""

AGNHOST_LITE_GO = r"""package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func die(err error) { fmt.Fprintln(os.Stderr, err); os.Exit(1) }

func serveTCP(port string, name []byte) {
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil { die(err) }
	for {
		c, err := ln.Accept()
		if err != nil { continue }
		go func(c net.Conn) {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write(name)
			c.Close()
		}(c)
	}
}

func serveUDP(port string, name []byte) {
	pc, err := net.ListenPacket("udp", ":"+port)
	if err != nil { die(err) }
	buf := make([]byte, 65536)
	for {
		_, addr, err := pc.ReadFrom(buf)
		if err == nil { pc.WriteTo(name, addr) }
	}
}

func serve(ports []string) {
	name, err := os.Hostname()
	if err != nil { die(err) }
	for _, p := range ports {
		go serveTCP(p, []byte(name))
		go serveUDP(p, []byte(name))
	}
	// PID 1 gets only signals it handles: exit cleanly on TERM/INT.
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	<-ch
}

func connect(args []string) int {
	fs := flag.NewFlagSet("connect", flag.ExitOnError)
	udp := fs.Bool("udp", false, "use UDP")
	timeout := fs.Float64("timeout", 2, "seconds")
	fs.Parse(args)
	proto, d := "tcp", time.Duration(*timeout*float64(time.Second))
	if *udp { proto = "udp" }
	c, err := net.DialTimeout(proto, fs.Arg(0), d)
	if err != nil { fmt.Fprintln(os.Stderr, err); return 1 }
	defer c.Close()
	c.SetDeadline(time.Now().Add(d))
	if *udp { c.Write([]byte("hostname?\n")) }
	buf := make([]byte, 1024)
	n, err := c.Read(buf)
	if n == 0 { fmt.Fprintln(os.Stderr, err); return 1 }
	fmt.Println(string(buf[:n]))
	return 0
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve-hostname" {
		ports := os.Args[2:]
		if len(ports) == 0 { ports = []string{"80", "81"} }
		serve(ports)
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "connect" { os.Exit(connect(os.Args[2:])) }
	fmt.Fprintln(os.Stderr, "usage: agnhost-lite serve-hostname [PORT...]")
	fmt.Fprintln(os.Stderr, "       agnhost-lite connect [--udp] [--timeout S] HOST:PORT")
	os.Exit(2)
}
"""


def build_agnhost_lite(dest: Path) -> Path:
    """Compile the static agnhost-lite binary to *dest* with Go 1.19 (offline)."""
    k8sbuild.ensure_packages(["golang-1.19-go"])
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "main.go"
        src.write_text(AGNHOST_LITE_GO)
        env = {
            **os.environ,
            "PATH": f"{k8sbuild.GO_BIN_DIR}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "CGO_ENABLED": "0",
            "GOPROXY": "off",
            "GO111MODULE": "off",
            "GOCACHE": str(k8sbuild.GO_CACHE_DIR),
        }
        cmd = ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(dest), str(src)]
        subprocess.run(cmd, env=env, check=True, cwd=tmp)
    return dest


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, **kw: object) -> None:
    """Add one deterministic entry (root-owned, mtime 0) to *tar*."""
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid = 0, 0, 0
    for key, value in kw.items():
        setattr(info, key, value)
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def rootfs_layer(extra: dict[str, bytes]) -> bytes:
    """Uncompressed layer tar: busybox + applet symlinks in /bin, base dirs, *extra* files."""
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("root", 0o700)):
            _add(tar, d, type=tarfile.DIRTYPE, mode=mode)
        for d in ("proc", "sys", "dev", "www", "var", "run"):
            _add(tar, d, type=tarfile.DIRTYPE, mode=0o755)
        _add(tar, "bin/busybox", BUSYBOX.read_bytes(), mode=0o755)
        for applet in applets:
            if applet != "busybox":
                _add(tar, f"bin/{applet}", type=tarfile.SYMTYPE, linkname="busybox", mode=0o777)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
        _add(tar, "etc/passwd", passwd, mode=0o644)
        _add(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n", mode=0o644)
        for name, data in extra.items():
            _add(tar, name, data, mode=0o755)
    return buf.getvalue()


def _blob(tar: tarfile.TarFile, data: bytes) -> str:
    """Store *data* as an OCI blob in *tar*; return its ``sha256:…`` digest."""
    digest = hashlib.sha256(data).hexdigest()
    _add(tar, f"blobs/sha256/{digest}", data, mode=0o644)
    return f"sha256:{digest}"


MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def _descriptor(tar: tarfile.TarFile, media_type: str, data: bytes) -> dict[str, object]:
    """Store *data* as a blob and return its OCI descriptor."""
    return {"mediaType": media_type, "digest": _blob(tar, data), "size": len(data)}


def _index(manifest_desc: dict[str, object], ref: str) -> dict[str, object]:
    """index.json naming the single manifest *ref* (linux/amd64)."""
    entry = {
        **manifest_desc,
        "platform": {"architecture": "amd64", "os": "linux"},
        # why: containerd's importer takes the full name from this annotation;
        # the OCI ref.name alone would need ``ctr import --base-name``.
        "annotations": {
            "io.containerd.image.name": ref,
            "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1],
        },
    }
    return {"schemaVersion": 2, "manifests": [entry]}


def write_oci_archive(ref: str, layer: bytes, cmd: list[str], dest: Path) -> Path:
    """Write a one-layer OCI image-layout tarball named *ref* to *dest*."""
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _add(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode(), mode=0o644)
        gz = gzip.compress(layer, mtime=0)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": _descriptor(
                tar, "application/vnd.oci.image.config.v1+json", json.dumps(config).encode()
            ),
            "layers": [_descriptor(tar, "application/vnd.oci.image.layer.v1.tar+gzip", gz)],
        }
        desc = _descriptor(tar, MANIFEST_TYPE, json.dumps(manifest).encode())
        _add(tar, "index.json", json.dumps(_index(desc, ref)).encode(), mode=0o644)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.rename(dest)
    return dest


def ensure_images(image_dir: Path = DEFAULT_IMAGE_DIR) -> dict[str, Path]:
    """Build the pause and workload tarballs if missing; return ref → tarball path."""
    pause = image_dir / "pause.oci.tar"
    workload = image_dir / "workload.oci.tar"
    if not pause.exists():
        write_oci_archive(PAUSE_IMAGE, rootfs_layer({}), PAUSE_CMD, pause)
    if not workload.exists():
        agn = build_agnhost_lite(image_dir / "agnhost-lite")
        extra = {
            "bin/agnhost-lite": agn.read_bytes(),
            "bin/workload-serve": WORKLOAD_SCRIPT.encode(),
        }
        write_oci_archive(WORKLOAD_IMAGE, rootfs_layer(extra), ["/bin/workload-serve"], workload)
    return {PAUSE_IMAGE: pause, WORKLOAD_IMAGE: workload}


def image_present(ref: str, address: Path) -> bool:
    """True if *ref* is in the k8s.io namespace of the containerd at *address*."""
    out = subprocess.run(
        ["ctr", "--address", str(address), "-n", "k8s.io", "images", "ls", "-q"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return ref in out


def ensure_imported(images: dict[str, Path], address: Path) -> None:
    """``ctr -n k8s.io images import`` each image not yet in that containerd."""
    for ref, tarball in images.items():
        if not image_present(ref, address):
            ctr = ["ctr", "--address", str(address), "-n", "k8s.io"]
            cmd = [*ctr, "images", "import", str(tarball)]
            subprocess.run(cmd, capture_output=True, check=True)
