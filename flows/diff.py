"""Desired versus installed flows, per object key -> adds, modifies, deletes.

Flows are the same flow when ``Flow.identity`` (table, priority, match) is
equal. For each identity:

* only desired -> **add**;
* only installed -> **delete** (strict);
* both, actions differ, cookie and timeouts equal -> **modify** (MODIFY_STRICT
  keeps the packet counters);
* both, cookie or timeouts differ -> **add**. Why: an OpenFlow 1.3 modify
  never changes the cookie, so a flow moved to a new round must be re-added
  (an ADD over the same identity replaces it) or the old-round cleanup would
  delete it. (On restart the controller instead moves unchanged flows with
  ``ofmsg.recookie_flow``, a Nicira flow-mod that keeps ``duration``.)

Identities are compared across all keys given, so a flow that moves from one
object to another is neither deleted nor re-added - reconcile both keys in the
same call, or the later call for the old key would delete it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Set
from dataclasses import dataclass

from flows.ir import Flow, Match

Identity = tuple[str, int, tuple]
# (table name, priority) -> match -> flow: an identity index that makes no tuple per flow
_Index = dict[tuple[str, int], dict[tuple[Match, ...], Flow]]


@dataclass(frozen=True)
class Delta:
    """What to send to turn installed flows into desired flows."""

    adds: tuple[Flow, ...] = ()
    modifies: tuple[Flow, ...] = ()  # the desired version of each modified flow
    deletes: tuple[Flow, ...] = ()  # the installed version of each deleted flow

    @property
    def empty(self) -> bool:
        """Whether nothing needs to be sent."""
        return not (self.adds or self.modifies or self.deletes)


def diff(
    desired: Mapping[Hashable, Iterable[Flow]], installed: Mapping[Hashable, Iterable[Flow]]
) -> Delta:
    """Return the ``Delta`` from ``installed`` to ``desired`` (both ``{key: flows}``).

    Pass only the keys to reconcile: a key missing from ``desired`` but present
    in ``installed`` has all its flows deleted. Raises ``ValueError`` if two
    desired flows share an identity but differ (OVS can hold only one).
    """
    # why: only keys whose flows changed are indexed; an unchanged key's flows
    # matter only where a changed key uses the same identity. A policy recompute
    # over a big cluster passes ~60k flows of which a few change, and indexing
    # them all cost ≈ 13 MiB at every label change.
    want: _Index = {}
    have: _Index = {}
    kept: list[Iterable[Flow]] = []
    for key in desired.keys() | installed.keys():
        new, old = desired.get(key, ()), installed.get(key, ())
        if _same(new, old):
            kept.append(new)
            continue
        for flow in new:
            _put(want, flow)
        for flow in old:
            _put(have, flow)
    for flows in kept:
        for flow in flows:
            if _get(want, flow) is not None or _get(have, flow) is not None:
                _put(want, flow)
                _put(have, flow)
    return _delta(want, have)


def _delta(want: _Index, have: _Index) -> Delta:
    adds, modifies = [], []
    for group, flows in want.items():
        olds = have.get(group, {})
        for match, flow in flows.items():
            old = olds.get(match)
            if old is None or (old.cookie, old.idle_timeout, old.hard_timeout) != (
                flow.cookie,
                flow.idle_timeout,
                flow.hard_timeout,
            ):
                adds.append(flow)
            elif old.actions != flow.actions:
                modifies.append(flow)
    deletes = [
        flow
        for group, flows in have.items()
        for match, flow in flows.items()
        if match not in want.get(group, {})
    ]
    return Delta(_sorted(adds), _sorted(modifies), _sorted(deletes))


def diff_flows(desired: Iterable[Flow], installed: Iterable[Flow]) -> Delta:
    """Return the ``Delta`` for one object's flows."""
    return diff({None: desired}, {None: installed})


def _same(new: Iterable[Flow], old: Iterable[Flow]) -> bool:
    """Whether two keys' flow collections are equal (sets compare cheaply; others never)."""
    if new is old:
        return True
    return isinstance(new, Set) and isinstance(old, Set) and new == old


def _put(index: _Index, flow: Flow) -> None:
    """Index ``flow`` by identity; ``ValueError`` if a different flow has it."""
    group = index.setdefault((flow.table.name, flow.priority), {})
    other = group.setdefault(flow.match, flow)
    if other is not flow and other != flow:
        raise ValueError(f"two different flows share identity {flow.identity}")


def _get(index: _Index, flow: Flow) -> Flow | None:
    group = index.get((flow.table.name, flow.priority))
    return None if group is None else group.get(flow.match)


def _sorted(flows: list[Flow]) -> tuple[Flow, ...]:
    return tuple(sorted(flows, key=lambda f: (f.table.table_id, -f.priority, repr(f.match))))
