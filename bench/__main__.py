"""``python -m bench``: run Sluice's benchmarks and write docs/BENCHMARKS.md + docs/benchmarks.json.

Needs root, Open vSwitch, iproute2, ethtool, iperf3 and Debian's
containernetworking-plugins. ``--quick`` runs tiny sizes (the smoke test);
``--only`` picks benchmarks; ``--out-dir`` says where the two files go;
``--render JSON`` re-renders BENCHMARKS.md from a results file (e.g. after
editing bench/analysis.md) without running anything.
Everything a benchmark makes lives in ``slb-*`` namespaces and a temporary
work directory, and is removed afterwards, also on failure or SIGTERM.
``resources`` also needs etcd and the kube-apiserver built by ``python -m
sandbox.k8sbuild``; its control plane lives in an ``slr-*`` namespace with
etcd's data in /dev/shm/slr-etcd-*, both removed the same way.
``datapath``'s cross-node phases use the same etcd and kube-apiserver, in an
``slb-dpcp-*`` namespace, and are skipped (the record says why) without them.
``netready`` instead brings up its own sandbox cluster (``sl-*``, the Kubernetes
build in /var/cache/sluice) under /tmp/sluice-sandbox.lock and downs it after.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

# why: python-ovs' poller imports eventlet (via os-ken), which warns on import.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from bench import report  # noqa: E402
from bench.common import REPO, loadavg  # noqa: E402

BENCHMARKS = {
    "cni": "bench.cni_latency",
    "flows": "bench.flowprog",
    "datapath": "bench.datapath",
    "learn": "bench.learn",
    "resources": "bench.resources",
    "netready": "bench.netready",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), default=None)
    parser.add_argument("--out-dir", type=Path, default=REPO / "docs")
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs for debugging")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="only re-render OUT_DIR/BENCHMARKS.md from JSON"
    )
    return parser.parse_args(argv)


def run_one(name: str, workdir: Path, quick: bool) -> dict[str, Any]:
    """Run one benchmark; a failure becomes an ``error`` record (its clean-up already ran)."""
    module = importlib.import_module(BENCHMARKS[name])
    started = time.monotonic()
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    try:
        result: dict[str, Any] = module.run(workdir / name, quick=quick)
    except Exception:  # noqa: BLE001 — record it, run the other benchmarks
        result = {"name": name, "title": name, "error": traceback.format_exc(), "targets": []}
    result["duration_s"] = round(time.monotonic() - started, 1)
    print(f"bench: {name} done in {result['duration_s']} s", file=sys.stderr, flush=True)
    return result


def _terminate(signum: int, _frame: Any) -> None:
    # why: turn SIGTERM into an exception so every ExitStack unwinds and cleans up.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; write the report; 1 if any benchmark failed."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.render:
        (args.out_dir / "BENCHMARKS.md").write_text(
            report.render(json.loads(args.render.read_text()))
        )
        return 0
    previous = signal.signal(signal.SIGTERM, _terminate)
    names = args.only or list(BENCHMARKS)
    workdir = Path(tempfile.mkdtemp(prefix="slb-", dir="/tmp"))
    doc: dict[str, Any] = {
        "command": "python -m bench"
        + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:])),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "quick": args.quick,
        "machine": report.machine(),
        "load_start": loadavg(),
    }
    start = time.monotonic()
    try:
        doc["results"] = [run_one(name, workdir, args.quick) for name in names]
    finally:
        signal.signal(signal.SIGTERM, previous)
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    doc["load_end"] = loadavg()
    doc["duration_s"] = time.monotonic() - start
    md, js = report.write(doc, args.out_dir)
    print(f"bench: wrote {md} and {js}", file=sys.stderr)
    return 1 if any("error" in r for r in doc["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
