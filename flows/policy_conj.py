"""The flows of one policy conjunction, memoized across compiles (part of ``flows.policy``).

A conjunction is judged on up to three dimensions (local pods x peers x
ports); each dimension is a set of clauses, one flow each, plus the flow that
matches the completed ``conj_id``. Flows are memoized per conjunction in a
``RunMemo`` (the last compile's entries only). When a conjunction changes (a
peer pod was relabelled) the flows of the clauses that did not change are
taken from its previous version in the same slot (direction, priority, cookie)
instead of being built again: under label churn a namespace-wide rule of
thousands of clauses then costs one new flow, not thousands (building a flow
normalizes and checks its match), and the old and new versions share memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flows import cookies
from flows.ir import Action, Conjunction, Flow, Match
from flows.memo import RunMemo
from flows.recipes import IP
from flows.table import TableSpec

Clause = tuple[Match, ...]  # one flow's worth of match items within a dimension
Dimension = frozenset[Clause]
_Slot = tuple[str, int, int]  # direction name, priority, cookie
_Part = tuple[int, int, Clause | None]  # (n dimensions, dimension k, clause); None: conj_id


@dataclass(frozen=True)
class Direction:
    """Where and how one policy direction is judged."""

    name: str  # Policy attribute with the rules: "ingress" / "egress"
    policy_type: str
    rule_table: TableSpec
    allow: TableSpec  # where an allowed new connection continues
    peer_field: str  # the peer's address field in the packet


@dataclass(frozen=True)
class Conj:
    """One conjunctive flow; ``None`` = the dimension allows everything."""

    local: Dimension
    peers: Dimension | None
    ports: Dimension | None

    def parts(self) -> list[_Part]:
        """Each flow's place, in the order ``build`` makes the flows."""
        dims = [dim for dim in (self.local, self.peers, self.ports) if dim is not None]
        n = len(dims)
        parts: list[_Part] = [(n, k, clause) for k, dim in enumerate(dims, 1) for clause in dim]
        return parts + ([(n, 0, None)] if n > 1 else [])


ConjKey = tuple[Direction, Conj, int, int]  # direction, conjunction, priority, cookie


def conj_flows(d: Direction, conj: Conj, priority: int, cookie: int) -> tuple[Flow, ...]:
    """Flows of one conjunction at ``priority`` (conj_id = ``priority``); memoized.

    Call inside ``run()`` (as ``flows_for_policies`` does) for the memo to keep them.
    """
    flows = _FLOWS.get((d, conj, priority, cookie))
    _BY_SLOT.store((d.name, priority, cookie), (conj, flows))
    return flows


@contextmanager
def run() -> Iterator[None]:
    """One compile: afterwards the memos hold only what it used."""
    with _FLOWS.run(), _BY_SLOT.run():
        yield


def _build(key: ConjKey) -> tuple[Flow, ...]:
    """The flows of ``key``, reusing its slot's previous flows for unchanged clauses."""
    d, conj, priority, cookie = key
    previous = _BY_SLOT.lookup((d.name, priority, cookie))
    reuse = dict(zip(previous[0].parts(), previous[1], strict=True)) if previous else {}
    allow = (d.allow.goto(),)
    table = d.rule_table
    # why: one cookie object (already carrying the table id) and one actions
    # tuple per dimension, shared by all its flows instead of one per flow.
    cookie = cookies.with_table(cookie, table.table_id)
    actions: dict[int, tuple[Action, ...]] = {0: allow}
    flows = []
    for part in conj.parts():
        flow = reuse.get(part)
        if flow is None:
            n, k, clause = part
            if k not in actions:
                # why: OVS refuses conjunction(id,1/1); one dimension gets plain flows
                actions[k] = allow if n == 1 else (Conjunction(priority, k, n),)
            match = (IP, Match("conj_id", priority)) if clause is None else (IP, *clause)
            flow = Flow(table, priority, match, actions[k], cookie)
        flows.append(flow)
    return tuple(flows)


def _never(slot: _Slot) -> tuple[Conj, tuple[Flow, ...]]:
    raise KeyError(slot)  # why: _BY_SLOT is only read with lookup() and written with store()


_FLOWS: RunMemo[ConjKey, tuple[Flow, ...]] = RunMemo(_build)
_BY_SLOT: RunMemo[_Slot, tuple[Conj, tuple[Flow, ...]]] = RunMemo(_never)
