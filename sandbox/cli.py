"""`sluicectl`: operate the sandbox cluster.

sluicectl sandbox up [--nodes N] [--mode overlay] [--tunnel vxlan|geneve]
sluicectl sandbox down | status
sluicectl sandbox env NODE          # export lines for ovs-* tools and kubectl
sluicectl sandbox exec NODE -- CMD  # CMD in the node's network namespace
sluicectl sandbox exec NS/POD -- CMD  # CMD in the pod's network namespace
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from sandbox import cluster
from sandbox.cluster import DEFAULT_STATE_DIR
from sandbox.sluice_node import SluiceCni, ovs_env

KUBECTL = Path("/var/cache/sluice/k8s-v1.20.2/bin/kubectl")


def _kubeconfig(state_dir: Path) -> Path:
    return state_dir / "admin.kubeconfig"


def _nodes(state_dir: Path) -> list[str]:
    """Names of the nodes recorded in the sandbox state."""
    st = cluster.StateFile(state_dir)
    return [n.name for n in cluster.recorded_nodes(st)] if st.path.exists() else []


def cmd_status(args: argparse.Namespace) -> int:
    """Nodes with readiness, address and podCIDR; then process liveness."""
    status = cluster.status(args.state_dir)
    if not status.get("processes"):
        print(f"no sandbox in {args.state_dir}")
        return 1
    ready = status.get("nodes_ready", {})
    cidrs = _pod_cidrs(args.state_dir) if status.get("apiserver_ready") else {}
    print(f"apiserver ready: {status.get('apiserver_ready')}")
    print(f"kubeconfig: {_kubeconfig(args.state_dir)}")
    print(f"{'NODE':8} {'READY':6} {'ADDRESS':16} PODCIDR")
    for node in cluster.recorded_nodes(cluster.StateFile(args.state_dir)):
        print(
            f"{node.name:8} {str(ready.get(node.name, False)):6} {node.ip:16} "
            f"{cidrs.get(node.name, '-')}"
        )
    dead = [k for k, v in status["processes"].items() if not v["alive"]]
    print(
        f"processes: {len(status['processes'])} recorded, "
        f"{'all alive' if not dead else 'not running: ' + ', '.join(dead)}"
    )
    return 0 if not dead else 1


def _pod_cidrs(state_dir: Path) -> dict[str, str]:
    env = {**os.environ, "KUBECONFIG": str(_kubeconfig(state_dir))}
    out = subprocess.run(
        [
            str(KUBECTL),
            "get",
            "nodes",
            "-o",
            'jsonpath={range .items[*]}{.metadata.name}={.spec.podCIDR}{"\\n"}{end}',
        ],
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def cmd_up(args: argparse.Namespace) -> int:
    """Bring the sandbox up with Sluice (idempotent)."""
    hook = SluiceCni(_kubeconfig(args.state_dir), mode=args.mode, tunnel=args.tunnel)
    result = cluster.up(args.nodes, args.state_dir, install_cni=hook)
    print(json.dumps({k: result[k] for k in ("nodes_ready", "timings_s") if k in result}, indent=1))
    print(f"\nexport KUBECONFIG={_kubeconfig(args.state_dir)}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """Print export lines addressing one node's OVS, and the cluster's kubeconfig."""
    node = _node(args.state_dir, args.node)
    env = {
        **ovs_env(node),
        "KUBECONFIG": str(_kubeconfig(args.state_dir)),
        "PATH": f"{KUBECTL.parent}:{os.environ.get('PATH', '')}",
    }
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def _node(state_dir: Path, name: str) -> Any:
    for node in cluster.recorded_nodes(cluster.StateFile(state_dir)):
        if node.name == name:
            return node
    raise SystemExit(f"sluicectl: no node {name!r} in the sandbox ({', '.join(_nodes(state_dir))})")


def cmd_exec(args: argparse.Namespace) -> int:
    """Run a command in a node's or a pod's network namespace with the host's tools."""
    if not args.command:
        raise SystemExit("sluicectl: give a command after --")
    if "/" not in args.target:
        node = _node(args.state_dir, args.target)
        argv = ["nsenter", f"--net=/run/netns/{node.netns}", "--", *args.command]
        return subprocess.call(argv, env={**os.environ, **ovs_env(node)})
    namespace, pod = args.target.split("/", 1)
    node_name, netns_path = pod_netns(args.state_dir, namespace, pod)
    node = _node(args.state_dir, node_name)
    # why: the pod's netns file lives in the node's private mount namespace.
    argv = [
        "nsenter",
        f"--mount={node.mntns}",
        "--",
        "nsenter",
        f"--net={netns_path}",
        "--",
        *args.command,
    ]
    return subprocess.call(argv)


def pod_netns(state_dir: Path, namespace: str, pod: str) -> tuple[str, str]:
    """(node name, netns path) of a pod, from the API server and the node's OVSDB."""
    env = {**os.environ, "KUBECONFIG": str(_kubeconfig(state_dir))}
    out = subprocess.run(
        [str(KUBECTL), "get", "pod", "-n", namespace, pod, "-o", "json"],
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode != 0:
        raise SystemExit(f"sluicectl: {out.stderr.strip()}")
    node_name = json.loads(out.stdout)["spec"].get("nodeName")
    if not node_name:
        raise SystemExit(f"sluicectl: pod {namespace}/{pod} is not scheduled yet")
    node = _node(state_dir, node_name)
    rows = subprocess.run(
        [
            "ovs-vsctl",
            "--format=json",
            "--columns=external_ids",
            "find",
            "Interface",
            f"external_ids:sluice-pod-namespace={namespace}",
            f"external_ids:sluice-pod-name={pod}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **ovs_env(node)},
        check=True,
    )
    for (ext,) in json.loads(rows.stdout)["data"]:
        ids = dict(ext[1])
        if ids.get("sluice-netns"):
            return node_name, ids["sluice-netns"]
    raise SystemExit(f"sluicectl: pod {namespace}/{pod} has no Sluice port on {node_name}")


def parser() -> argparse.ArgumentParser:
    """The command line."""
    top = argparse.ArgumentParser(
        prog="sluicectl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    groups = top.add_subparsers(dest="group", required=True)
    sb = groups.add_parser("sandbox", help="the local cluster")
    sb.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    sub = sb.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="create or repair the cluster")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--mode", choices=("overlay", "routing"), default="overlay")
    up.add_argument("--tunnel", choices=("vxlan", "geneve"), default="vxlan")
    up.set_defaults(run=cmd_up)
    sub.add_parser("down", help="remove everything").set_defaults(
        run=lambda a: 1 if cluster.down(a.state_dir) else 0
    )
    sub.add_parser("status", help="nodes, their state and addresses").set_defaults(run=cmd_status)
    env = sub.add_parser("env", help="export lines for one node")
    env.add_argument("node")
    env.set_defaults(run=cmd_env)
    ex = sub.add_parser("exec", help="run a command in a node's or pod's netns")
    ex.add_argument("target", help="NODE or NAMESPACE/POD")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    ex.set_defaults(run=cmd_exec)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of `sluicectl`."""
    args = parser().parse_args(argv)
    if getattr(args, "command", None) and args.command[0] == "--":
        args.command = args.command[1:]
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
