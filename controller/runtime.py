"""Wire the node controller together: OVSDB, node set-up, os-ken, reconciler, CNI, REST."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
from dataclasses import dataclass, field

from cni.ports import OvsdbPortStore
from controller import nodesetup
from controller.app import start_osken
from controller.cniservice import CniService
from controller.config import Config
from controller.datapath import purge_datapath_flows, rundir_of
from controller.informer import Informer
from controller.k8s import UPLINK_MAC_ANNOTATION, NodeHandler, api_client
from controller.kubeapi import NAMESPACES, NETWORK_POLICIES, NODES, PODS, RawApi
from controller.metrics import Metrics
from controller.podwatch import PodWatcher
from controller.policywatch import PolicyInputHandler
from controller.reconcile import Reconciler
from controller.rest import RestServer, create_app
from controller.state import NodeState
from controller.switch import Switch
from controller.uplink import Uplink, ensure_routing_uplink, ensure_uplink_bridge
from controller.viewimpl import NodeFacts, View
from flows import cookies, pipeline
from flows.model import NodeConfig
from ovsdb import ports, schema
from ovsdb.connection import OvsdbClient

LOG = logging.getLogger(__name__)


UNDERLAY_PROBLEM = "podCIDR"


def underlay_problem(pod_cidr: str, subnet: ipaddress.IPv4Network | None) -> str | None:
    """Why `pod_cidr` cannot be an underlay pod range on `subnet`, or None if it can."""
    net = ipaddress.ip_network(pod_cidr)
    if subnet is not None and net.version == 4 and net.subnet_of(subnet):
        return None
    return (
        f"underlay mode: podCIDR {pod_cidr} is not inside the uplink's subnet {subnet}: "
        "fabric hosts cannot reach these pods; allocate pod ranges from the fabric subnet"
    )


def peer_problem(
    mode: str, subnet: ipaddress.IPv4Network | None, name: str, node_ip: str | None
) -> str | None:
    """Why `mode` cannot reach peer `name` at `node_ip` from our uplink `subnet`, or None."""
    if mode in ("overlay", "hybrid") or subnet is None or node_ip is None:
        return None
    if ipaddress.ip_address(node_ip) in subnet:
        return None
    return (
        f"node {name} ({node_ip}) is not on this node's L2 segment {subnet}: "
        f"{mode} mode cannot reach its pods; use overlay or hybrid mode"
    )


def node_name(cfg: Config) -> str:
    """The configured node name, else $NODE_NAME, else the host name."""
    return cfg.node_name or os.environ.get("NODE_NAME") or socket.gethostname()


def choose_round(client: OvsdbClient, bridge: str) -> int:
    """This process's flow round: the one after the round recorded on the bridge."""
    recorded = ports.get_bridge_external_ids(client, bridge).get(schema.FLOW_ROUND, "0")
    previous = int(recorded) if recorded.isdigit() else 0
    return cookies.next_round(previous) if previous else 1


@dataclass
class Controller:
    """Everything one sluice-controller process runs."""

    cfg: Config
    client: OvsdbClient
    state: NodeState = field(default_factory=NodeState)
    metrics: Metrics = field(default_factory=Metrics)
    switch: Switch = field(init=False)
    uplink: Uplink | None = None
    peer_problems: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.switch = Switch(self.metrics.observe_flow_mod)

    def start(self) -> None:
        """Set up the node, then start every component."""
        cfg = self.cfg
        dp_type = self.datapath_type = nodesetup.ensure_bridge(self.client, cfg)
        ports.ensure_flow_table_names(self.client, cfg.bridge, pipeline.table_names())
        self.round = choose_round(self.client, cfg.bridge)
        recorded = ports.get_bridge_external_ids(self.client, cfg.bridge)
        # why: OVSDB is the durable record; a restart must not wait for the API
        # server (in routing mode the host reaches it only through our flows).
        pod_cidr = cfg.pod_cidr or recorded.get(schema.POD_CIDR)
        pod_cidrs = (pod_cidr,) if pod_cidr else ()
        if pod_cidr:
            self._set_node(pod_cidr, recorded.get(schema.NODE_IP))
        self.podwatch = PodWatcher(self.client, self.state)
        self.podwatch.start()
        self.reconciler = Reconciler(
            self.state,
            self.switch,
            self.metrics,
            self.round,
            self._converged,
            lambda: purge_datapath_flows(rundir_of(cfg.ovsdb)),
        )
        self.reconciler.start()
        start_osken(
            cfg.openflow.listen_host,
            cfg.openflow.port,
            self.switch,
            self.state,
            self.metrics.set_switch_connected,
        )
        self._start_cni(pod_cidrs)
        self._start_kubernetes()
        facts = NodeFacts(node_name(cfg), cfg.mode, cfg.tunnel_type, dp_type, cfg.bridge)
        view = View(
            facts,
            self.state,
            self.switch,
            self.reconciler,
            self.podwatch,
            self._threads,
            lambda: list(self.peer_problems.values()),
        )
        self.rest = RestServer(create_app(view, self.metrics), cfg.rest.host, cfg.rest.port)
        self.rest.start()
        LOG.info("REST API on http://%s:%d", cfg.rest.host, self.rest.port)

    def _start_kubernetes(self) -> None:
        """Watch Nodes when an API server is configured (else run standalone)."""
        api = api_client(self.cfg.kubeconfig)
        self.informers: list[Informer] = []
        if api is None:
            LOG.info("no Kubernetes API configured: standalone on podCIDR %s", self.cfg.pod_cidr)
            return
        self.kube = RawApi(api)
        handler = NodeHandler(node_name(self.cfg), self.state, self._own_node, self._check_peer)
        self.informers.append(Informer("nodes", self.kube.lister(NODES), handler))
        for kind, path in (
            ("namespaces", NAMESPACES),
            ("k8s_pods", PODS),
            ("policies", NETWORK_POLICIES),
        ):
            self.informers.append(
                Informer(kind, self.kube.lister(path), PolicyInputHandler(kind, self.state, api))
            )
        for informer in self.informers:
            informer.start()

    def _own_node(self, cidrs: tuple[str, ...], internal_ip: str | None) -> None:
        """This node's Node object: set up gw0 and start serving its podCIDR."""
        current = self.state.node()
        if current is not None and current.pod_cidrs == cidrs:
            return
        LOG.info("podCIDR %s from the Node object", ",".join(cidrs))
        self._set_node(cidrs[0], internal_ip)
        self.cni.set_pod_cidrs(cidrs, self._gateway_mac())
        if self.uplink is not None and self.cfg.mode != "overlay":
            # why: peers route to our pods by rewriting the destination MAC to our
            # uplink's; they learn it from this annotation on our Node.
            body = {"metadata": {"annotations": {UPLINK_MAC_ANNOTATION: self.uplink.mac}}}
            self.kube.patch_node(node_name(self.cfg), body)

    def _check_peer(self, name: str, node_ip: str | None) -> None:
        """Routing and underlay need every peer on our L2 segment: say so when one is not."""
        subnet = self.uplink.subnet if self.uplink else None
        problem = peer_problem(self.cfg.mode, subnet, name, node_ip)
        if problem is None:
            self.peer_problems.pop(name, None)
        elif name not in self.peer_problems:
            LOG.warning("%s", problem)
            self.peer_problems[name] = problem

    def _check_underlay(self, pod_cidr: str, subnet: ipaddress.IPv4Network | None) -> None:
        """Underlay pods are fabric addresses: the podCIDR must lie in the uplink's subnet."""
        problem = underlay_problem(pod_cidr, subnet)
        if problem is None:
            self.peer_problems.pop(UNDERLAY_PROBLEM, None)
        else:
            LOG.warning("%s", problem)
            self.peer_problems[UNDERLAY_PROBLEM] = problem

    def _set_node(self, pod_cidr: str, internal_ip: str | None = None) -> None:
        cfg = self.cfg
        gateway = nodesetup.ensure_gateway(self.client, cfg, pod_cidr)
        node_ip = cfg.node_ip or internal_ip or nodesetup.detect_node_ip(cfg)
        node_ip = node_ip or str(gateway.address.ip)
        ports.set_bridge_external_ids(
            self.client, cfg.bridge, {schema.POD_CIDR: pod_cidr, schema.NODE_IP: node_ip}
        )
        if cfg.mode == "overlay":
            if self.datapath_type == "netdev" and cfg.uplink_interface:
                self.uplink = ensure_uplink_bridge(self.client, cfg)
            nodesetup.ensure_tunnel_port(self.client, cfg, node_ip)
        else:
            self.uplink = ensure_routing_uplink(self.client, cfg)
            if self.uplink is None:
                raise RuntimeError(f"{cfg.mode} mode needs an uplink interface (uplinkInterface)")
            if cfg.mode == "underlay":
                self._check_underlay(pod_cidr, self.uplink.subnet)
            if cfg.mode == "hybrid":
                # why after the uplink: on netdev the tunnel's outer packets leave
                # through the bridge that holds the node IP, br-int's LOCAL here.
                nodesetup.ensure_tunnel_port(self.client, cfg, node_ip)
        self.state.set_node(
            NodeConfig(
                name=node_name(cfg),
                node_ip=node_ip,
                pod_cidrs=(pod_cidr,),
                gateway_ip=str(gateway.address.ip),
                gateway_mac=gateway.mac,
                cluster_cidr=cfg.cluster_cidr,
                mode=cfg.mode,
                tunnel_type=cfg.tunnel_type,
                service_cidr=cfg.service_cidr,
                uplink_mac=self.uplink.mac if self.uplink else nodesetup.uplink_mac(cfg),
                uplink_subnet=self._uplink_subnet(),
            )
        )

    def _uplink_subnet(self) -> str | None:
        subnet = self.uplink.subnet if self.uplink else None
        return str(subnet) if subnet is not None else None

    def _gateway_mac(self) -> str:
        """gw0's MAC once _set_node made it, else ""."""
        node = self.state.node()
        return node.gateway_mac if node is not None else ""

    def _start_cni(self, pod_cidrs: tuple[str, ...]) -> None:
        cfg = self.cfg
        node = nodesetup.node_network(self.client, cfg, pod_cidrs, self._gateway_mac())
        self.cni = CniService(
            cfg.cni.server_socket,
            node,
            OvsdbPortStore(self.client),
            f"{cfg.cni.bin_dir}:/usr/lib/cni",
            self.metrics.observe_cni_request,
        )
        self.cni.start()

    def _threads(self) -> list[threading.Thread]:
        threads = [self.reconciler._thread]
        return threads + [i._thread for i in self.informers if i._thread is not None]

    def _converged(self, round_: int, stale_rounds: set[int]) -> None:
        """Record the round once the switch holds only it (the reconciler thread calls this)."""
        ports.set_bridge_external_ids(
            self.client, self.cfg.bridge, {schema.FLOW_ROUND: str(round_)}
        )
        self.metrics.set_pods(len(self.state.snapshot().pods))

    def stop(self) -> None:
        """Stop the components that hold sockets or threads."""
        for informer in getattr(self, "informers", []):
            informer.stop()
        for stop in (self.rest.stop, self.cni.stop, self.reconciler.stop):
            try:
                stop()
            except Exception:  # noqa: BLE001 — keep stopping the rest
                LOG.exception("stop failed")


def run(cfg: Config, stop: threading.Event) -> int:
    """Run the node controller until `stop` is set."""
    client = OvsdbClient(cfg.ovsdb, timeout=10.0)
    controller = Controller(cfg, client)
    try:
        controller.start()
        print("sluice-controller ready", flush=True)
        stop.wait()
    finally:
        if hasattr(controller, "rest"):
            controller.stop()
        client.close()
    return 0
