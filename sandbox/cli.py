"""`sluicectl`: operate the sandbox cluster.

sluicectl sandbox up [--nodes N] [--mode overlay|routing|underlay|hybrid] [--tunnel vxlan|geneve]
sluicectl sandbox down | status
sluicectl sandbox env NODE          # export lines for ovs-* tools and kubectl
sluicectl sandbox exec NODE -- CMD  # CMD in the node's network namespace
sluicectl sandbox exec NS/POD -- CMD  # CMD in the pod's network namespace
sluicectl policy explain NS/POD [--node NODE | --url URL] [--json]
                                    # which NetworkPolicies select the pod, what they allow
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from controller import config as controller_config
from sandbox import cluster
from sandbox.cluster import DEFAULT_STATE_DIR
from sandbox.controlplane import pod_network
from sandbox.sluice_node import SluiceCni, find_interfaces, ovs_env

KUBECTL = Path("/var/cache/sluice/k8s-v1.20.2/bin/kubectl")

MODES = ("overlay", "routing", "underlay", "hybrid")


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
    network = pod_network(args.mode)
    # why: hybrid only differs from routing toward a node on another subnet.
    far = (f"node{args.nodes}",) if args.mode == "hybrid" else ()
    result = cluster.up(
        args.nodes, args.state_dir, install_cni=hook, pod_network=network, far_nodes=far
    )
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


def pod_node(state_dir: Path, namespace: str, pod: str) -> str:
    """The name of the node a pod is scheduled on, from the API server."""
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
    return str(node_name)


def pod_netns(state_dir: Path, namespace: str, pod: str) -> tuple[str, str]:
    """(node name, netns path) of a pod, from the API server and the node's OVSDB."""
    node_name = pod_node(state_dir, namespace, pod)
    node = _node(state_dir, node_name)
    rows = find_interfaces(
        node,
        f"external_ids:sluice-pod-namespace={namespace}",
        f"external_ids:sluice-pod-name={pod}",
    )
    for (ext,) in json.loads(rows)["data"]:
        ids = dict(ext[1])
        if ids.get("sluice-netns"):
            return node_name, ids["sluice-netns"]
    raise SystemExit(f"sluicectl: pod {namespace}/{pod} has no Sluice port on {node_name}")


# A GET run by the interpreter inside the node's netns: prints the status line, then the body.
_GET_SCRIPT = """
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        code, body = r.status, r.read()
except urllib.error.HTTPError as e:
    code, body = e.code, e.read()
except OSError as e:
    sys.exit(f"cannot reach {sys.argv[1]}: {e}")
sys.stdout.write(f"{code}\\n{body.decode()}")
"""
Fetch = Callable[[str], tuple[int, str]]


class FetchError(Exception):
    """The controller's REST API could not be reached."""


def command_fetch(prefix: list[str]) -> Fetch:
    """A GET that runs a small Python client under ``prefix`` (e.g. nsenter into a netns).

    # why a subprocess: the controller's REST API listens on loopback inside
    # the node's netns; only a process in that netns can connect to it.
    """

    def fetch(url: str) -> tuple[int, str]:
        argv = [*prefix, sys.executable, "-c", _GET_SCRIPT, url]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        status, _, body = out.stdout.partition("\n")
        if out.returncode != 0 or not status.isdigit():
            why = out.stderr.strip().splitlines()
            raise FetchError(why[-1] if why else f"{argv[0]} exited {out.returncode}")
        return int(status), body

    return fetch


def controller_url(node: Any) -> str:
    """Base URL of a sandbox node's controller REST API, from its configuration file."""
    cfg = controller_config.load(node.dir / "sluice" / "controller.yaml")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(cfg.rest.host, cfg.rest.host)
    if cfg.rest.port == 0:
        raise SystemExit(f"sluicectl: {node.name}'s controller REST port is 0 (random)")
    return f"http://{f'[{host}]' if ':' in host else host}:{cfg.rest.port}"


def pod_arg(text: str) -> tuple[str, str]:
    """Argparse type for NS/POD: (namespace, name); a bad value exits with code 2."""
    namespace, slash, name = text.partition("/")
    if not slash or not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"expected NAMESPACE/POD, got {text!r}")
    return namespace, name


def cmd_policy_explain(args: argparse.Namespace) -> int:
    """Ask the controller of the pod's node which policies select the pod."""
    namespace, name = args.pod
    if args.url:
        base, fetch = args.url.rstrip("/"), command_fetch([])
    else:
        node = _node(args.state_dir, args.node or pod_node(args.state_dir, namespace, name))
        prefix = ["nsenter", f"--net=/run/netns/{node.netns}", "--"]
        base, fetch = controller_url(node), command_fetch(prefix)
    return policy_explain(namespace, name, base, fetch, args.json, sys.stdout)


def policy_explain(
    namespace: str, name: str, base: str, fetch: Fetch, as_json: bool, out: TextIO
) -> int:
    """GET ``/v1/policies/explain`` from ``base`` and print it; 0, or 1 on any error."""
    query = urllib.parse.urlencode({"namespace": namespace, "pod": name})
    url = f"{base}/v1/policies/explain?{query}"
    try:
        status, body = fetch(url)
        data = json.loads(body)
    except FetchError as exc:
        print(f"sluicectl: {exc}", file=sys.stderr)
        return 1
    except ValueError:
        print(f"sluicectl: {url}: not a JSON answer: {body[:200]!r}", file=sys.stderr)
        return 1
    if status != 200:
        detail = data.get("detail") if isinstance(data, dict) else None
        message = detail.get("message") if isinstance(detail, dict) else detail
        print(f"sluicectl: {url}: HTTP {status}: {message or body}", file=sys.stderr)
        return 1
    out.write(json.dumps(data, indent=2) + "\n" if as_json else format_explain(data))
    return 0


def format_explain(data: dict[str, Any]) -> str:
    """A ``/v1/policies/explain`` answer as a readable summary."""
    pod = data["pod"]
    where = "on this node" if pod["local"] else "on another node"
    labels = ",".join(f"{k}={v}" for k, v in data["labels"].items()) or "none"
    lines = [
        f"pod {pod['namespace']}/{pod['name']}  {', '.join(pod['ips']) or 'no IP'}  ({where})",
        f"  labels: {labels}",
    ]
    for direction, word in (("ingress", "from"), ("egress", "to")):
        info = data[direction]
        if not info["isolated"]:
            lines.append(f"{direction}: not isolated - all traffic allowed")
            continue
        lines.append(f"{direction}: isolated (default deny) - allowed only:")
        for policy in info["policies"]:
            lines.append(f"  policy {policy['namespace']}/{policy['name']}:")
            if not policy["rules"]:
                lines.append(f"    no {direction} rules - allows nothing")
            lines += [line for rule in policy["rules"] for line in _rule_lines(rule, word)]
    return "\n".join(lines) + "\n"


def _rule_lines(rule: dict[str, Any], word: str) -> list[str]:
    peers = rule["peers"]
    ports = rule["ports"]
    lines = [f"    rule {rule['index']} ({rule['installed_flows']} flows here):"]
    if peers is None:
        lines.append(f"      {word} any address")
    lines += [f"      {word} {_peer_text(p)}" for p in peers or ()]
    if rule["peer_cidrs"] == []:
        lines.append("      (its peers match no address now: allows nothing)")
    text = "any protocol and port" if ports is None else ", ".join(map(_port_text, ports))
    lines.append(f"      on {text}")
    return lines


def _peer_text(peer: dict[str, Any]) -> str:
    block = peer["ip_block"]
    if block is not None:
        excepts = f" except {', '.join(block['except'])}" if block["except"] else ""
        return f"ipBlock {block['cidr']}{excepts}"
    parts = []
    if peer["namespace_selector"] is not None:
        parts.append(f"namespaces {peer['namespace_selector'] or '(all)'}")
    if peer["pod_selector"] is not None:
        parts.append(f"pods {peer['pod_selector'] or '(all)'}")
    pods = [f"{p['namespace']}/{p['name']} {','.join(p['ips'])}" for p in peer["pods"]]
    return f"{', '.join(parts)} -> {'; '.join(pods) or 'no pods now'}"


def _port_text(port: dict[str, Any]) -> str:
    if port["port"] is None:
        return f"{port['protocol']} (all ports)"
    number = f"{port['port']}-{port['end_port']}" if port["end_port"] else str(port["port"])
    text = f"{port['protocol']}/{number}"
    if port["resolved"] is not None:
        found = ", ".join(f"{r['pod']}:{r['port']}" for r in port["resolved"])
        text += f" (= {found or 'no destination pod has it'})"
    return text


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
    up.add_argument("--mode", choices=MODES, default="overlay")
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
    pol = groups.add_parser("policy", help="NetworkPolicy as the node controllers see it")
    pol.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    pol_sub = pol.add_subparsers(dest="action", required=True)
    explain = pol_sub.add_parser("explain", help="which policies select a pod, what they allow")
    explain.add_argument("pod", type=pod_arg, metavar="NS/POD")
    where = explain.add_mutually_exclusive_group()
    where.add_argument("--node", help="ask this node's controller (default: the pod's node)")
    where.add_argument("--url", help="controller REST base URL, reached directly")
    explain.add_argument("--json", action="store_true", help="print the raw JSON answer")
    explain.set_defaults(run=cmd_policy_explain)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of `sluicectl`."""
    args = parser().parse_args(argv)
    if getattr(args, "command", None) and args.command[0] == "--":
        args.command = args.command[1:]
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
