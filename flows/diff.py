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

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

from flows.ir import Flow

Identity = tuple[str, int, tuple]


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
    want = _by_identity(flow for flows in desired.values() for flow in flows)
    have = _by_identity(flow for flows in installed.values() for flow in flows)
    adds, modifies = [], []
    for ident, flow in want.items():
        old = have.get(ident)
        if old is None or (old.cookie, old.idle_timeout, old.hard_timeout) != (
            flow.cookie,
            flow.idle_timeout,
            flow.hard_timeout,
        ):
            adds.append(flow)
        elif old.actions != flow.actions:
            modifies.append(flow)
    deletes = [flow for ident, flow in have.items() if ident not in want]
    return Delta(_sorted(adds), _sorted(modifies), _sorted(deletes))


def diff_flows(desired: Iterable[Flow], installed: Iterable[Flow]) -> Delta:
    """Return the ``Delta`` for one object's flows."""
    return diff({None: desired}, {None: installed})


def _by_identity(flows: Iterable[Flow]) -> dict[Identity, Flow]:
    out: dict[Identity, Flow] = {}
    for flow in flows:
        other = out.setdefault(flow.identity, flow)
        if other != flow:
            raise ValueError(f"two different flows share identity {flow.identity}")
    return out


def _sorted(flows: list[Flow]) -> tuple[Flow, ...]:
    return tuple(sorted(flows, key=lambda f: (f.table.table_id, -f.priority, repr(f.match))))
