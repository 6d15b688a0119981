"""`make demo`: a 3-node Kubernetes cluster networked by Sluice, shown working.

Brings the sandbox up in overlay mode (VXLAN), creates a Deployment spread over
the nodes and a pod in a second namespace with kubectl, prints the pod-to-pod
connectivity matrix measured with real pings, shows flows with their table
names, and says how to explore and how to tear down. The cluster stays up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sandbox import cluster
from sandbox.cli import KUBECTL
from sandbox.cluster import DEFAULT_STATE_DIR
from sandbox.sluice_node import SluiceCni, ovs_env

MANIFEST = """
apiVersion: v1
kind: Namespace
metadata: {name: demo-web}
---
apiVersion: v1
kind: Namespace
metadata: {name: demo-tools}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo-web}
spec:
  replicas: 6
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule,
         labelSelector: {matchLabels: {app: web}}}
      containers:
      - {name: web, image: "localhost/sluice/workload:latest", imagePullPolicy: Never}
---
apiVersion: v1
kind: Pod
metadata: {name: toolbox, namespace: demo-tools}
spec:
  containers:
  - {name: tools, image: "localhost/sluice/workload:latest", imagePullPolicy: Never}
"""


def kubectl(state_dir: Path, *args: str, stdin: str | None = None, check: bool = True) -> str:
    """Run kubectl against the sandbox."""
    env = {**os.environ, "KUBECONFIG": str(state_dir / "admin.kubeconfig")}
    out = subprocess.run(
        [str(KUBECTL), *args], input=stdin, capture_output=True, text=True, env=env, timeout=120
    )
    if check and out.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def wait_running(state_dir: Path, timeout: float = 180.0) -> list[dict[str, str]]:
    """Wait until every demo pod runs; return name/namespace/node/ip of each."""
    deadline = time.monotonic() + timeout
    while True:
        data = json.loads(kubectl(state_dir, "get", "pods", "-A", "-o", "json"))
        pods = [p for p in data["items"] if p["metadata"]["namespace"].startswith("demo-")]
        running = [
            p for p in pods if p["status"].get("phase") == "Running" and p["status"].get("podIP")
        ]
        if pods and len(running) == len(pods) == 7:
            return [
                {
                    "ns": p["metadata"]["namespace"],
                    "name": p["metadata"]["name"],
                    "node": p["spec"]["nodeName"],
                    "ip": p["status"]["podIP"],
                }
                for p in running
            ]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(running)}/{len(pods)} demo pods running")
        time.sleep(1)


def reachable(state_dir: Path, src: dict[str, str], ip: str) -> bool:
    """Ping from pod `src` to `ip` (a few tries: a new tunnel neighbour may drop one)."""
    for _ in range(3):
        out = kubectl(
            state_dir,
            "exec",
            "-n",
            src["ns"],
            src["name"],
            "--",
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            ip,
            check=False,
        )
        if " 0% packet loss" in out:
            return True
    return False


def print_matrix(state_dir: Path, pods: list[dict[str, str]]) -> None:
    """The pod-to-pod matrix: one row per source, one column per destination."""
    print("\nConnectivity (ping), rows = from, columns = to:")
    labels = [f"{p['name'][-5:]}@{p['node']}" for p in pods]
    print(" " * 18 + " ".join(f"{i:>3}" for i in range(len(pods))))
    for i, src in enumerate(pods):
        cells = ["  ✓" if reachable(state_dir, src, dst["ip"]) else "  ✗" for dst in pods]
        print(f"{i:>2} {labels[i]:<15}" + " ".join(cells))
    for i, p in enumerate(pods):
        print(f"   {i}: {p['ns']}/{p['name']} on {p['node']} ip {p['ip']}")


def show_flows(state_dir: Path) -> None:
    """A few of node1's flows, as ovs-ofctl prints them with table names."""
    node = next(
        n for n in cluster.recorded_nodes(cluster.StateFile(state_dir)) if n.name == "node1"
    )
    out = subprocess.run(
        [
            "ovs-ofctl",
            "-O",
            "OpenFlow13",
            "--names",
            "--no-stats",
            "dump-flows",
            "br-int",
            "table=L3Forwarding",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **ovs_env(node)},
        check=True,
    ).stdout
    print("\nnode1's L3Forwarding table (ovs-ofctl --names dump-flows br-int):")
    for line in out.splitlines()[:8]:
        print("  " + (line if len(line) < 160 else line[:157] + "..."))


def main() -> int:
    """Run the demo."""
    state_dir = DEFAULT_STATE_DIR
    print(
        "== Sluice demo: a 3-node Kubernetes v1.20.2 cluster, each node a network namespace "
        "with its own kubelet, containerd, OVS and sluice-controller (overlay, VXLAN)"
    )
    cluster.up(3, state_dir, install_cni=SluiceCni(state_dir / "admin.kubeconfig"))
    print("\n== kubectl apply: namespaces demo-web and demo-tools, Deployment web (6), pod toolbox")
    kubectl(state_dir, "apply", "-f", "-", stdin=MANIFEST)
    pods = wait_running(state_dir)
    print(kubectl(state_dir, "get", "pods", "-n", "demo-web", "-o", "wide"))
    print(kubectl(state_dir, "get", "pods", "-n", "demo-tools", "-o", "wide"))
    print_matrix(state_dir, sorted(pods, key=lambda p: (p["node"], p["ns"], p["name"])))
    show_flows(state_dir)
    print(f"""
== Explore
  export KUBECONFIG={state_dir / "admin.kubeconfig"} PATH={KUBECTL.parent}:$PATH
  kubectl get pods -A -o wide
  eval "$(.venv/bin/sluicectl sandbox env node1)"; ovs-ofctl -O OpenFlow13 --names dump-flows br-int
  .venv/bin/sluicectl sandbox exec node1 -- curl -s 127.0.0.1:9595/v1/pods
  .venv/bin/sluicectl sandbox exec demo-tools/toolbox -- ip addr
== Tear down
  .venv/bin/sluicectl sandbox down""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
