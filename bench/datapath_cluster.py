"""Two-node Sluice clusters for the datapath benchmark, without kubelets.

sluice-controller learns its podCIDR and its peers (their node IPs, podCIDRs
and, when routed, uplink MACs) only from Node objects, so the benchmark runs a
real API server (bench.apiserver: etcd + kube-apiserver, no kubelet, no
controller-manager) and creates the Node objects itself, complete with
``spec.podCIDR`` and an InternalIP, as a controller-manager and kubelet would.

Layout, all in ``slb-*`` namespaces:

* ``dpcp``: etcd and kube-apiserver, and a Linux bridge ``mgmt``
  (203.0.113.1/24, the apiserver's address). Each node has a veth ``mgmt0``
  on it: control traffic only, never on the measured path.
* two node namespaces per pair, joined by a veth ``eth0`` (the wire, their
  uplink), each with its own OVS (userspace TSO per the mode's default,
  controller/tso.py) and its own sluice-controller in the pair's mode; one
  pod per node, made through the node's CNI.

One API server is one cluster, so only pairs whose modes can share a cluster
exist at once (a routed node cannot compile a flow to a peer that publishes no
uplink MAC); the caller deletes a phase's Node objects with its pairs.
"""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.apiserver import LOOPBACK, SERVICE_IP, ApiServer
from bench.common import NetnsPool, del_netns, enter_netns, new_netns, sh
from bench.datapath_pairs import Pair, wire
from bench.kubeload import Kube, KubeError
from bench.node import SluiceNode, pod_ip
from controller.tso import userspace_tso_default
from sandbox import pki

MGMT_NET = ipaddress.ip_network("203.0.113.0/24")
API_IP = str(MGMT_NET.network_address + 1)
UPLINK = "eth0"


class FabricApi(ApiServer):
    """bench.apiserver's control plane, serving on ``address`` instead of loopback."""

    def __init__(self, workdir: Path, netns: str, address: str) -> None:
        super().__init__(workdir, netns)
        self.address = address

    @property
    def url(self) -> str:
        """The apiserver's URL on the management bridge."""
        return f"https://{self.address}:{self.port}"

    def apiserver_cmd(self) -> list[str]:
        """ApiServer's command line, bound to and advertising ``address``."""
        flags = ("--bind-address=", "--advertise-address=")
        return [
            a.replace(LOOPBACK, self.address) if a.startswith(flags) else a
            for a in super().apiserver_cmd()
        ]

    def start(self) -> FabricApi:
        """Certificates naming ``address``, then ApiServer.start (which keeps them)."""
        pki.ensure_control_plane_pki(self.pki_dir, self.address, SERVICE_IP)
        super().start()
        return self


class Cluster:
    """An API server in its own netns; node namespaces join it over the ``mgmt`` bridge."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ns = ""
        self.api: FabricApi | None = None
        self._attached = 0
        self._executor: ThreadPoolExecutor | None = None
        self._kube: Kube | None = None

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig every controller uses."""
        assert self.api is not None
        return self.api.kubeconfig

    def start(self) -> Cluster:
        """The netns, its bridge, etcd and kube-apiserver (once); stops all on failure."""
        if self.api is not None:
            return self
        try:
            self.ns = new_netns("dpcp")
            sh("ip", "-n", self.ns, "link", "add", "mgmt", "type", "bridge")
            sh("ip", "-n", self.ns, "addr", "add", f"{API_IP}/{MGMT_NET.prefixlen}", "dev", "mgmt")
            sh("ip", "-n", self.ns, "link", "set", "mgmt", "up")
            self.api = FabricApi(self.workdir, self.ns, API_IP).start()
            # why a thread in the netns: the API address exists only there.
            self._executor = ThreadPoolExecutor(1, initializer=enter_netns, initargs=(self.ns,))
            self._kube = Kube(API_IP, self.api.port, self.api.ssl_context())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the API server (by pid) and remove the netns. Idempotent."""
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None
        if self.api is not None:
            self.api.stop()
            self.api = None
        if self.ns:
            del_netns(self.ns)
            self.ns = ""

    def attach(self, node_ns: str) -> None:
        """Give ``node_ns`` a ``mgmt0`` veth on the management bridge, with the next address."""
        self._attached += 1
        peer = f"m{self._attached}"
        addr = f"{MGMT_NET.network_address + 9 + self._attached}/{MGMT_NET.prefixlen}"
        sh(
            "ip",
            "-n",
            node_ns,
            "link",
            "add",
            "mgmt0",
            "type",
            "veth",
            "peer",
            peer,
            "netns",
            self.ns,
        )
        sh("ip", "-n", self.ns, "link", "set", peer, "master", "mgmt", "up")
        sh("ip", "-n", node_ns, "addr", "add", addr, "dev", "mgmt0")
        sh("ip", "-n", node_ns, "link", "set", "mgmt0", "up")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        assert self._executor is not None and self._kube is not None
        return self._executor.submit(self._kube.call, method, path, body).result()

    def add_node(self, name: str, pod_cidr: str, node_ip: str) -> None:
        """Create Node ``name`` as controller-manager and kubelet would leave it."""
        self._call("POST", "/api/v1/nodes", node_body(name, pod_cidr, node_ip))

    def delete_node(self, name: str) -> None:
        """Delete Node ``name`` (already gone is fine)."""
        try:
            self._call("DELETE", f"/api/v1/nodes/{name}")
        except KubeError as exc:
            if exc.status != 404:
                raise


def node_body(name: str, pod_cidr: str, node_ip: str) -> dict[str, Any]:
    """A Node with its podCIDR and InternalIP (the uplink MAC annotation is Sluice's to add)."""
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node_ip},
                {"type": "Hostname", "address": name},
            ]
        },
    }


@dataclass(frozen=True)
class PairSpec:
    """One two-node Sluice set-up: its mode, tunnel, wire MTU and addressing.

    ``wire_net`` holds the two node IPs (its first two hosts); ``pod_cidrs``
    are the nodes' podCIDRs, inside ``cluster_cidr``. TSO follows the mode's
    default on the userspace datapath (controller/tso.py).
    """

    name: str
    mode: str
    tunnel: str
    wire_mtu: int
    wire_net: str
    pod_cidrs: tuple[str, str]
    cluster_cidr: str
    reference: str

    @property
    def tso(self) -> bool:
        """Whether the nodes' OVS runs with userspace TSO."""
        return userspace_tso_default(self.mode, "netdev")

    def node_ip(self, i: int) -> str:
        """Node ``i``'s address on the wire."""
        return str(list(ipaddress.ip_network(self.wire_net).hosts())[i])

    def facts(self) -> dict[str, Any]:
        """What the report prints about this set-up."""
        tunnel = self.tunnel if self.mode in ("overlay", "hybrid") else "-"
        return {
            "mode": self.mode,
            "tunnel": tunnel,
            "wire_mtu": self.wire_mtu,
            "tso": self.tso,
            "reference": self.reference,
        }


class FabricNode(SluiceNode):
    """A SluiceNode of a two-node cluster: mode, uplink and peers from the spec and the API."""

    def __init__(self, workdir: Path, spec: PairSpec, index: int, kubeconfig: Path) -> None:
        super().__init__(workdir, f"dpx{index}", spec.pod_cidrs[index], userspace_tso=spec.tso)
        self.spec = spec
        self.node_ip = spec.node_ip(index)
        self.kubeconfig = kubeconfig

    def open(self) -> FabricNode:
        """Only the node netns (`start_services` runs OVS and the controller later)."""
        super(SluiceNode, self).start()
        return self

    def controller_config(self) -> dict[str, Any]:
        """SluiceNode's configuration in the spec's mode; podCIDR from the Node object."""
        cfg = super().controller_config()
        del cfg["podCIDR"]
        cfg.update(
            mode=self.spec.mode,
            tunnelType=self.spec.tunnel,
            datapathType="netdev",
            kubeconfig=str(self.kubeconfig),
            clusterCIDR=self.spec.cluster_cidr,
            nodeIP=self.node_ip,
            uplinkInterface=UPLINK,
        )
        return cfg


def sluice_cross(stack: ExitStack, cluster: Cluster, spec: PairSpec, workdir: Path) -> Pair:
    """Two wired Sluice nodes in ``spec.mode`` and one pod on each; the client is on node 0."""
    nodes = [FabricNode(workdir / f"n{i}", spec, i, cluster.kubeconfig) for i in range(2)]
    for node in nodes:
        stack.callback(node.stop)
        node.open()
        cluster.attach(node.ns)
    wire(nodes[0].ns, nodes[1].ns, spec.wire_mtu, UPLINK)
    prefix = ipaddress.ip_network(spec.wire_net).prefixlen
    for node in nodes:
        sh("ip", "-n", node.ns, "addr", "add", f"{node.node_ip}/{prefix}", "dev", UPLINK)
        cluster.add_node(node.ns, node.pod_cidr, node.node_ip)
        stack.callback(cluster.delete_node, node.ns)
    with ThreadPoolExecutor(2) as ex:
        list(ex.map(FabricNode.start_services, nodes))
    pool = NetnsPool("dpxp")
    stack.callback(pool.close)
    client, server = pool.make(2)
    nodes[0].call("ADD", "cid-client", client)
    result = nodes[1].call("ADD", "cid-server", server)
    return Pair(spec.name, client, server, pod_ip(result), spec.facts())
