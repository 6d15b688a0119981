"""Keep br-int's flows equal to the flows the model asks for.

On every (re)connection the reconciler dumps the switch and converges it under
this process's *round*: flows that already exist are moved to the new round in
place (a Nicira flow-mod that rewrites the cookie and keeps the flow, so its
counters and duration continue), missing flows are added, and only then are the
previous round and anything else stale deleted. Traffic never stops. Afterwards
changes are applied per object key as a diff against the installed cache.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from itertools import chain, starmap
from typing import Any

from controller.metrics import Metrics
from controller.state import POLICY_DIRTY, NodeState, Snapshot
from controller.switch import Switch, SwitchError
from flows import cookies, ofmsg
from flows.cookies import Category
from flows.desired import GATEWAY_KEY, PIPELINE_KEY
from flows.diff import diff
from flows.ir import Flow
from flows.node import gateway_flows, pipeline_flows
from flows.pod import flows_for_pod
from flows.policy import flows_for_policies
from flows.remote import flows_for_remote_node

LOG = logging.getLogger(__name__)
FlowsByKey = dict[str, frozenset[Flow]]
POLICY_PREFIX = "policy/"
POD_PREFIX = "pod/"  # PodPort.key
_RETRY = 1.0


def policy_flows(snap: Snapshot, round_: int) -> FlowsByKey:
    """Every NetworkPolicy key's flows; local pods get their ofport from OVSDB's record."""
    if snap.node is None:
        return {}
    if not snap.policies:
        # why: with no NetworkPolicy the result is the base flows alone, whatever
        # the pods and namespaces; indexing every pod of the cluster for nothing
        # cost ~8 ms per new pod (200 pods), on the path of its flows.
        return flows_for_policies((), (), (), snap.node, round_)
    ofports = {(p.namespace, p.name): p.ofport for p in snap.pods.values()}
    pods = []
    for meta in snap.k8s_pods.values():
        ofport = ofports.get((meta.namespace, meta.name))
        # why: replace() re-validates the whole PodMeta (address parsing); most
        # pods (every remote one) keep what they have.
        pods.append(meta if meta.ofport == ofport else replace(meta, ofport=ofport))
    return flows_for_policies(
        snap.policies.values(), pods, snap.namespaces.values(), snap.node, round_
    )


def desired_for(
    snap: Snapshot, keys: Iterable[str], round_: int, policy: FlowsByKey | None = None
) -> FlowsByKey:
    """The desired flows of `keys` (a key whose object is gone maps to no flows).

    `policy` is the result of `policy_flows` when the caller already has it.
    """
    node = snap.node
    out: FlowsByKey = {}
    if node is None:
        return {key: frozenset() for key in keys}
    for key in keys:
        if key.startswith(POLICY_PREFIX):
            if policy is None:
                policy = policy_flows(snap, round_)
            out[key] = policy.get(key, frozenset())
            continue
        if key == PIPELINE_KEY:
            flows = pipeline_flows(node, round_=round_)
        elif key == GATEWAY_KEY:
            flows = gateway_flows(node, round_=round_)
        elif key in snap.pods:
            flows = flows_for_pod(snap.pods[key], node, round_=round_)
        elif key in snap.remotes:
            try:
                flows = flows_for_remote_node(snap.remotes[key], node, round_=round_)
            except ValueError as exc:
                # why: one peer we cannot route to yet (e.g. its uplink MAC is not
                # published) must not keep every other flow from being installed.
                LOG.warning("no flows for %s: %s", key, exc)
                flows = []
        else:
            flows = []
        out[key] = frozenset(flows)
    return out


def all_keys(snap: Snapshot, policy: FlowsByKey) -> list[str]:
    """Every object key of the model (`policy` from `policy_flows`)."""
    return [PIPELINE_KEY, GATEWAY_KEY, *snap.pods, *snap.remotes, *policy]


def installed_key(stat: Any) -> tuple[int, int, tuple[Any, ...]]:
    """(table id, priority, match) of an installed flow (OFPFlowStats), comparable to `flow_key`."""
    return (stat.table_id, stat.priority, ofmsg.installed_match(stat.match))


def flow_key(flow: Flow) -> tuple[int, int, tuple[Any, ...]]:
    """(table id, priority, match) of a desired flow: OpenFlow's identity of the flow."""
    return (flow.table.table_id, flow.priority, flow.match)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector inside the block (reference counting goes on)."""
    # why: a full sync makes tens of thousands of long-lived, acyclic objects
    # (flows, matches, messages). The collector re-walks them every few hundred
    # allocations and all of them at each full collection, which was ~20 % of
    # a sync in profiles; none of them is cyclic garbage.
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Reconciler:
    """The thread that owns the installed-flow cache and talks to `Switch`."""

    def __init__(
        self,
        state: NodeState,
        switch: Switch,
        metrics: Metrics,
        round_: int,
        on_converged: Callable[[int, set[int]], None],
        on_policy_narrowed: Callable[[], object] | None = None,
    ) -> None:
        self.state = state
        self.switch = switch
        self.metrics = metrics
        self.round = round_
        self.installed: FlowsByKey = {}
        self._synced_generation = 0
        self._on_converged = on_converged
        self.on_policy_narrowed = on_policy_narrowed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reconciler", daemon=True)
        self.converged = threading.Event()

    def start(self) -> None:
        """Start the reconciler thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
        self.state.mark_all_dirty()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            change = self.state.wait_dirty(0.5)
            try:
                if self.switch.datapath is None:
                    continue
                if self.state.snapshot().node is None:
                    # why: without the node's facts no flow can be computed; syncing
                    # now would delete what a previous run installed.
                    continue
                if self.switch.generation != self._synced_generation:
                    self.full_sync()
                elif change is not None:
                    keys, everything = change
                    self.apply(self.state.snapshot(), keys, everything)
            except SwitchError as exc:
                LOG.warning("flow programming failed, resyncing: %s", exc)
                self._synced_generation = 0
                time.sleep(_RETRY)
            except Exception:  # noqa: BLE001 — keep the reconciler alive; resync later
                LOG.exception("reconcile failed, resyncing")
                self._synced_generation = 0
                time.sleep(_RETRY)

    def full_sync(self) -> None:
        """Converge the switch to the whole model under this round."""
        with gc_paused():
            self._full_sync()

    def _full_sync(self) -> None:
        generation = self.switch.generation
        snap = self.state.snapshot()
        policy = policy_flows(snap, self.round)
        desired = desired_for(snap, all_keys(snap, policy), self.round, policy)
        have = {installed_key(s): s for s in self.switch.dump_flows()}
        adds, recookies, modifies = [], [], []
        for flow in (f for flows in desired.values() for f in flows):
            found = have.pop(flow_key(flow), None)
            if found is None:
                adds.append(flow)
            elif found.cookie != flow.cookie:
                recookies.append((flow, found.cookie))
            else:
                modifies.append(flow)
        self.switch.send_batch(
            # why: an iterator, so the switch parses the first messages while the
            # rest are encoded (send_batch sends as it goes)
            lambda _dp: chain(
                map(ofmsg.encode_add, adds),
                starmap(ofmsg.encode_recookie, recookies),
                map(ofmsg.encode_modify, modifies),
            ),
            atomic=True,
        )
        stale_rounds = self._delete_stale(have.values())
        self.installed = desired
        self._synced_generation = generation
        self.metrics.count_flow_mods(add=len(adds), modify=len(recookies) + len(modifies))
        self.metrics.count_reconcile("startup" if generation == 1 else "reconnect")
        self._publish_counts()
        LOG.info(
            "flows converged: %d added, %d moved to round %d, %d modified, stale rounds %s",
            len(adds),
            len(recookies),
            self.round,
            len(modifies),
            sorted(stale_rounds),
        )
        self._on_converged(self.round, stale_rounds)
        self.converged.set()

    def _delete_stale(self, leftovers: Iterable[Any]) -> set[int]:
        """Delete old rounds by cookie mask and undesired current-round flows strictly."""
        rounds: set[int] = set()
        strict = []
        for stat in leftovers:
            if stat.cookie == 0:
                continue  # why: not Sluice's (cookie 0 is never minted); leave it
            r = cookies.round_of(stat.cookie)
            if r == self.round:
                strict.append(stat)
            else:
                rounds.add(r)

        def build(dp: Any) -> list[Any]:
            msgs = [ofmsg.delete_round(dp, r) for r in sorted(rounds) if r]
            ofp, parser = dp.ofproto, dp.ofproto_parser
            msgs += [
                parser.OFPFlowMod(
                    dp,
                    table_id=s.table_id,
                    command=ofp.OFPFC_DELETE_STRICT,
                    priority=s.priority,
                    out_port=ofp.OFPP_ANY,
                    out_group=ofp.OFPG_ANY,
                    match=s.match,
                )
                for s in strict
            ]
            return msgs

        if rounds or strict:
            self.switch.send_batch(build)
            self.metrics.count_flow_mods(delete=len(strict) + len(rounds))
        return rounds

    def apply(self, snap: Snapshot, keys: set[str], everything: bool = False) -> None:
        """Apply the model's changes for `keys` as a diff against the installed cache."""
        started = time.monotonic()
        policy = None
        if everything or POLICY_DIRTY in keys:
            # why: one policy or label change can move flows between rule keys;
            # diffing every policy key at once lets a moved flow stay in place.
            policy = policy_flows(snap, self.round)
            keys = (keys - {POLICY_DIRTY}) | set(policy)
            keys |= {k for k in self.installed if k.startswith(POLICY_PREFIX)}
        if everything:
            keys |= set(all_keys(snap, policy or {})) | set(self.installed)
        desired = desired_for(snap, keys, self.round, policy)
        want: dict[Hashable, frozenset[Flow]] = {k: v for k, v in desired.items()}
        have: dict[Hashable, frozenset[Flow]] = {
            k: self.installed.get(k, frozenset()) for k in keys
        }
        delta = diff(want, have)
        if not delta.empty:
            computed = time.monotonic()
            self.switch.send_batch(lambda _dp: ofmsg.encode_delta(delta), atomic=True)
            _log_pod_changes(want, have, started, computed)
            if self.on_policy_narrowed and _touches_policy(delta):
                self.on_policy_narrowed()
            self.metrics.count_flow_mods(
                add=len(delta.adds), modify=len(delta.modifies), delete=len(delta.deletes)
            )
        for key, flows in desired.items():
            if flows:
                self.installed[key] = flows
            else:
                self.installed.pop(key, None)
        self._publish_counts()

    def _publish_counts(self) -> None:
        counts = Counter(f.table.name for flows in self.installed.values() for f in flows)
        self.metrics.set_flows_per_table(counts)

    def installed_flows(self) -> list[Flow]:
        """A copy of every flow installed by this reconciler (for the REST API)."""
        return [f for flows in list(self.installed.values()) for f in flows]


def _log_pod_changes(
    want: Mapping[Hashable, frozenset[Flow]],
    have: Mapping[Hashable, frozenset[Flow]],
    started: float,
    computed: float,
) -> None:
    """Log the pods whose flows a batch changed, with where its time went."""
    # why: the wallclock of this line minus podwatch's "pod ... ofport" line is
    # the controller's share of a new pod's network-ready time (bench.netready).
    # why the prefix first: policy keys hold thousands of flows; comparing their
    # sets here would redo, on every batch, work the diff has already done.
    changed = [
        str(k) for k, v in want.items() if str(k).startswith(POD_PREFIX) and v and v != have[k]
    ]
    if changed:
        done = time.monotonic()
        LOG.info(
            "pod flows installed for %s: model %.1f ms, switch %.1f ms",
            " ".join(changed),
            (computed - started) * 1000.0,
            (done - computed) * 1000.0,
        )


def _touches_policy(delta: Any) -> bool:
    """Whether a delta touches NetworkPolicy flows (an allowance may have shrunk)."""
    flows = (*delta.deletes, *delta.modifies, *delta.adds)
    return any(f.cookie and cookies.category_of(f.cookie) is Category.POLICY for f in flows)
