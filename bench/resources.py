"""Benchmark 5: sluice-controller's memory and CPU in a big cluster (issue target: RSS <= 150 MB).

A real etcd + kube-apiserver v1.20.2 (``bench.apiserver``) in netns
``slr-cp-*`` holds a synthetic cluster (``bench.kubeload``: 1000 nodes, 10 000
pods with their IPs, 5 namespaces, 50 NetworkPolicies). One real controller
runs for ``node-0000`` against a private OVS in the same netns; the pods of
``node-0000`` are plugged into br-int as OVS ports with the CNI's
external_ids (no netns: only the controller's view of them matters), so the
policies have local pods to apply to. Phases, each sampled from /proc:

* sync: from exec until the controller is quiet after installing one flow per
  remote node (the whole start-up: imports, lists, first programming);
* idle: nothing changes;
* churn: pods are relabelled at a fixed rate (moving them between the tiers
  that policies select), then the time it takes to catch up.

References in the same run: a Python process of the same interpreter that
only imports the libraries (kubernetes, os_ken, ovs), one that imports all
of the controller's modules, and kube-apiserver itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench import kubeload, procstat
from bench.apiserver import ApiServer, binaries_missing
from bench.common import REPO, TOOL_PATH, del_netns, enter_netns, new_netns, stop_proc, target
from bench.kubeload import Kube, Shape
from ovsdb import schema
from sandbox.ovs import OvsInstance

LIMIT_MIB = 150.0
REST = "http://127.0.0.1:9595"
QUIET_CORE_SHARE = 0.03  # "quiet": under 3 % of a core over one second
SYNC_TIMEOUT = 300.0
REFERENCES = {
    "python + kubernetes, os_ken, ovs imported": "import kubernetes.client, "
    "kubernetes.watch, os_ken.base.app_manager, os_ken.ofproto.ofproto_v1_3_parser, ovs.db.idl",
    # why __main__: it decides what the controller imports (it keeps eventlet out)
    "python + every controller module imported": "import controller.__main__",
}


@dataclass(frozen=True)
class Sizes:
    """The cluster and the phases' lengths."""

    shape: Shape
    idle_s: float
    churn_rate: float
    churn_s: float


def sizes(quick: bool) -> Sizes:
    """Full: 1000 nodes, 10 000 pods, 50 policies; quick: a smoke-test cluster."""
    if quick:
        return Sizes(Shape(nodes=20, pods=100, namespaces=3, policies=5), 2.0, 20.0, 2.0)
    return Sizes(Shape(nodes=1000, pods=10000, namespaces=5, policies=50), 20.0, 100.0, 20.0)


@dataclass
class Bench:
    """What one run holds while it measures."""

    sizes: Sizes
    api: ApiServer
    kube: Kube
    pool: ThreadPoolExecutor
    ctl: subprocess.Popen[str]

    def in_netns(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on a thread inside the control plane's netns."""
        return self.pool.submit(fn, *args).result()

    def flows_per_table(self) -> dict[str, int]:
        """``sluice_flows`` from the controller's /metrics."""
        text = self.in_netns(_get, f"{REST}/metrics").decode()
        out = {}
        for line in text.splitlines():
            if line.startswith('sluice_flows{table="'):
                name, _, value = line[len('sluice_flows{table="') :].partition('"} ')
                out[name] = int(float(value))
        return out

    def remote_node_flows(self) -> int:
        """Installed flows whose cookie says "remote node" (from /v1/flows)."""
        flows = json.loads(self.in_netns(_get, f"{REST}/v1/flows?table=L3Forwarding"))
        return sum(1 for f in flows if f["category"] == "remote_node")

    def check_alive(self) -> None:
        """Raise if the controller died."""
        if self.ctl.poll() is not None:
            raise RuntimeError(f"controller exited with {self.ctl.returncode}")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return bytes(resp.read())


def run(workdir: Path, quick: bool = False) -> dict[str, Any]:
    """Run the resources benchmark; return its result record."""
    missing = binaries_missing()
    if missing:
        raise RuntimeError(f"missing {', '.join(missing)}: run `python -m sandbox.k8sbuild`")
    sz = sizes(quick)
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        ns = new_netns("cp", prefix="slr-")
        stack.callback(del_netns, ns)
        # why tmpfs: etcd fsyncs every write; on disk that dominates creating 20k objects.
        etcd_dir = Path(tempfile.mkdtemp(prefix="slr-etcd-", dir="/dev/shm"))
        stack.callback(shutil.rmtree, etcd_dir, True)
        api = ApiServer(workdir / "cp", ns, etcd_dir=etcd_dir)
        stack.callback(api.stop)
        api.start()
        pool = ThreadPoolExecutor(16, initializer=enter_netns, initargs=(ns,))
        stack.callback(pool.shutdown)
        kube = Kube("127.0.0.1", api.port, api.ssl_context())
        setup = kubeload.populate(kube, pool, sz.shape)
        refs = {name: _reference(code, stack) for name, code in REFERENCES.items()}
        ovs = OvsInstance(workdir / "ovs", ns)
        stack.callback(ovs.stop)
        ovs.start()
        plug_local_pods(ovs, sz.shape)
        ctl = start_controller(workdir, ns, ovs, api, stack)
        bench = Bench(sz, api, kube, pool, ctl)
        result = measure(bench, stack)
        result["breakdown"]["setup_s"] = setup
        result["references"] = {n: procstat.memory_mib(p.pid) for n, p in refs.items()}
    return report(sz, result)


def _reference(code: str, stack: ExitStack) -> subprocess.Popen[str]:
    """A child that imports ``code``'s modules, says so and waits on stdin."""
    script = f"{code}\nimport sys\nprint('ready', flush=True)\nsys.stdin.read()\n"
    proc = subprocess.Popen(
        [sys.executable, "-W", "ignore", "-c", script],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    stack.callback(stop_proc, proc)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"reference process failed: {code}")
    return proc


def plug_local_pods(ovs: OvsInstance, shape: Shape) -> None:
    """br-int with node-0000's pods as internal ports carrying the CNI's external_ids."""
    args = ["add-br", "br-int", "--", "set", "Bridge", "br-int", "datapath_type=netdev"]
    args.append("fail_mode=secure")
    for n, j in enumerate(kubeload.pods_on_node(0, shape)):
        ns, name = kubeload.pod_ref(j, shape)
        port = f"slrp{n}"
        ids = {
            schema.OWNER: schema.OWNER_CNI,
            schema.POD_NAMESPACE: ns,
            schema.POD_NAME: name,
            schema.CONTAINER_ID: f"bench{j:05d}",
            schema.IF_NAME: "eth0",
            schema.IPS: f"{kubeload.pod_ip(j, shape)}/24",
            schema.MAC: f"02:5e:01:00:{n >> 8:02x}:{n & 0xFF:02x}",
        }
        args += ["--", "add-port", "br-int", port, "--", "set", "Interface", port]
        args += ["type=internal", f"ofport_request={schema.POD_OFPORT_MIN + n}"]
        args += [f"external_ids:{k}={v}" for k, v in ids.items()]
    ovs.vsctl(*args)


def controller_config(workdir: Path, ovs: OvsInstance, api: ApiServer) -> dict[str, Any]:
    """The controller of node-0000: overlay mode, podCIDR from its Node object."""
    return {
        "nodeName": kubeload.node_name(0),
        "mode": "overlay",
        "datapathType": "netdev",
        "ovsdb": ovs.db_remote,
        "kubeconfig": str(api.kubeconfig),
        "clusterCIDR": str(kubeload.CLUSTER_NET),
        "nodeIP": kubeload.node_ip(0),
        "cni": {
            "serverSocket": str(workdir / "run" / "cni.sock"),
            "stateDir": str(workdir / "state"),
            "binDir": str(workdir / "bin"),
        },
        "logLevel": "info",
    }


def start_controller(
    workdir: Path, ns: str, ovs: OvsInstance, api: ApiServer, stack: ExitStack
) -> subprocess.Popen[str]:
    """``python -m controller`` in the netns; returns once it prints "ready"."""
    cfg = workdir / "controller.yaml"
    cfg.write_text(yaml.safe_dump(controller_config(workdir, ovs, api)))
    with open(workdir / "controller.log", "a") as log:
        # why `ip netns exec`: it execs in place, so the Popen pid is the controller's.
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "controller", "-c", str(cfg)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "PATH": TOOL_PATH},
        )
    stack.callback(stop_proc, proc, 10.0)
    assert proc.stdout is not None
    if "ready" not in proc.stdout.readline():
        raise RuntimeError(f"controller did not start; see {workdir / 'controller.log'}")
    return proc


def wait_quiet(bench: Bench, timeout: float) -> float:
    """Block until the controller uses < 3 % of a core over a second; return when that began."""
    deadline = time.monotonic() + timeout
    while True:
        bench.check_alive()
        start = time.monotonic()
        if procstat.cpu_rate(bench.ctl.pid, 1.0) < QUIET_CORE_SHARE:
            return start
        if time.monotonic() > deadline:
            raise TimeoutError(f"controller still busy after {timeout:.0f} s")


def wait_remote_flows(bench: Bench, started: float) -> float:
    """Poll /metrics until L3Forwarding holds a flow per remote node; return seconds since exec."""
    want = bench.sizes.shape.nodes - 1
    while bench.flows_per_table().get("L3Forwarding", 0) < want:
        bench.check_alive()
        if time.monotonic() - started > SYNC_TIMEOUT:
            raise TimeoutError(f"fewer than {want} L3Forwarding flows after {SYNC_TIMEOUT} s")
        time.sleep(0.5)
    return time.monotonic() - started


def measure(bench: Bench, stack: ExitStack) -> dict[str, Any]:
    """The three phases, for the controller and (for scale) kube-apiserver."""
    sz, pid = bench.sizes, bench.ctl.pid
    # why from the exec: the sync phase is the controller's whole start-up.
    started = time.monotonic() - _age(pid)
    ctl = procstat.Sampler(pid).start()
    stack.callback(ctl.stop)
    apiserver = procstat.Sampler(bench.api.pid("kube-apiserver")).start()
    stack.callback(apiserver.stop)
    ctl.begin("sync", start_wall=started, start_cpu=0.0)
    apiserver.begin("sync", start_wall=started)
    remote_s = wait_remote_flows(bench, started)
    quiet_at = wait_quiet(bench, SYNC_TIMEOUT)
    _end_both(ctl, apiserver)
    remote = bench.remote_node_flows()
    if remote != sz.shape.nodes - 1:
        raise RuntimeError(f"{remote} remote-node flows installed, expected {sz.shape.nodes - 1}")
    flows = bench.flows_per_table()
    _begin_both("idle", ctl, apiserver)
    time.sleep(sz.idle_s)
    _end_both(ctl, apiserver)
    _begin_both("churn", ctl, apiserver)
    churned = kubeload.churn(bench.kube, bench.pool, sz.shape, sz.churn_rate, sz.churn_s)
    churn_end = time.monotonic()
    _end_both(ctl, apiserver)
    _begin_both("after churn, until quiet", ctl, apiserver)
    catch_up = wait_quiet(bench, SYNC_TIMEOUT) - churn_end
    _end_both(ctl, apiserver)
    return {
        "controller": ctl.phases,
        "apiserver": apiserver.phases,
        "etcd": procstat.memory_mib(bench.api.pid("etcd")),
        "breakdown": {
            "sync_remote_node_flows_s": round(remote_s, 2),
            "sync_quiet_s": round(quiet_at - started, 2),
            "remote_node_flows": remote,
            "flows_per_table_after_sync": flows,
            "churn": {**churned, "catch_up_s": round(catch_up, 2)},
        },
    }


def _age(pid: int) -> float:
    """Seconds since ``pid`` started."""
    start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return max(0.0, uptime - start_ticks / procstat.CLK_TCK)


def _begin_both(name: str, *samplers: procstat.Sampler) -> None:
    for sampler in samplers:
        sampler.begin(name)


def _end_both(*samplers: procstat.Sampler) -> None:
    for sampler in samplers:
        sampler.end()


def report(sz: Sizes, res: dict[str, Any]) -> dict[str, Any]:
    """Tables per process and phase, the references and the RSS target."""
    ctl_rows = [p.row() for p in res["controller"]]
    api_rows = [p.row() for p in res["apiserver"]]
    peak = max(r["hwm_mib"] for r in ctl_rows)
    refs = [{"process": n, "rss_mib": m["VmRSS"], "anon_mib": m["RssAnon"]}
            for n, m in res["references"].items()]  # fmt: skip
    refs.append({"process": "kube-apiserver (end)", "rss_mib": api_rows[-1]["rss_end_mib"],
                 "anon_mib": api_rows[-1]["anon_end_mib"]})  # fmt: skip
    refs.append({"process": "etcd (end)", "rss_mib": res["etcd"]["VmRSS"],
                 "anon_mib": res["etcd"]["RssAnon"]})  # fmt: skip
    steady = ctl_rows[1]["rss_end_mib"]
    for row in refs:
        row["controller_idle_rss_ratio"] = round(steady / row["rss_mib"], 2)
    shape = sz.shape
    return {
        "name": "resources",
        "title": f"Controller resources ({shape.nodes} nodes, {shape.pods} pods in the API server)",
        "params": {
            **{k: getattr(shape, k) for k in ("nodes", "pods", "namespaces", "policies")},
            "local_pods": len(kubeload.pods_on_node(0, shape)),
            "idle_s": sz.idle_s,
            "churn": f"{sz.churn_rate:g} pod label updates/s for {sz.churn_s:g} s",
            "rss_target_mib": LIMIT_MIB,
            "peak_rss_over_target": round(peak / LIMIT_MIB, 3),
        },
        "tables": [
            {"title": "sluice-controller", "columns": list(ctl_rows[0]), "rows": ctl_rows},
            {"title": "kube-apiserver (for scale)", "columns": list(api_rows[0]), "rows": api_rows},
            {"title": "References (MiB)", "columns": list(refs[0]), "rows": refs},
        ],  # fmt: skip
        "breakdown": res["breakdown"],
        "targets": [target("controller peak RSS (VmHWM, MiB) <= 150", peak, LIMIT_MIB)],
    }
