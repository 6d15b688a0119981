"""The br-int pipeline: every table, declared once, in packet order.

How to add a table: add one ``_declare(...)`` line in its stage below, list the
tables its flows may jump to, point the previous table's ``next_names`` at it
if packets should flow into it, and add a line to ``docs/pipeline.md`` (a unit
test checks the doc against these declarations). Table numbers follow the
order of the lines; nothing outside ``render``/``ofmsg``/``fake_table`` uses them.

``Miss.NEXT`` tables are pass-through stages until later work fills them
(policy with conjunction + conntrack, services); their table-miss flow jumps to
the next declared table, so inserting rules there never needs a renumbering.
"""

from __future__ import annotations

import enum
import re
from typing import Final

from flows.table import Miss, PipelineError, Stage, TableSpec

OPENFLOW_VERSION: Final = "OpenFlow13"

_TABLES: list[TableSpec] = []
_CAMEL: Final = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def _declare(
    name: str, stage: Stage, miss: Miss, next_names: tuple[str, ...], doc: str
) -> TableSpec:
    spec = TableSpec(name, stage, miss, next_names, table_id=len(_TABLES), doc=doc)
    _TABLES.append(spec)
    return spec


# fmt: off
CLASSIFIER = _declare(
    "Classifier", Stage.CLASSIFIER, Miss.DROP, ("SpoofGuard",),
    "tag the packet source (pod/gateway/tunnel/uplink) in reg0 by in_port")
SPOOF_GUARD = _declare(
    "SpoofGuard", Stage.VALIDATION, Miss.DROP, ("ARPResponder", "ConntrackZone"),
    "pods may only send from their own MAC+IP (ARP: sha+spa); ARP goes to ARPResponder")
ARP_RESPONDER = _declare(
    "ARPResponder", Stage.VALIDATION, Miss.DROP, (),
    "answer ARP requests for local pods, the gateway and (for the host) remote pod IPs")
CONNTRACK_ZONE = _declare(
    "ConntrackZone", Stage.CONNTRACK_STATE, Miss.NEXT, ("ConntrackState",),
    "send IPv4 through conntrack (zone 65520, nat) and recirculate to ConntrackState")
CONNTRACK_STATE = _declare(
    "ConntrackState", Stage.CONNTRACK_STATE, Miss.NEXT, ("ServiceLB",),
    "drop +inv; later: fast path for +est")
SERVICE_LB = _declare(
    "ServiceLB", Stage.PRE_ROUTING, Miss.NEXT, ("EgressRule",),
    "Services (later); passes traffic on")
EGRESS_RULE = _declare(
    "EgressRule", Stage.EGRESS_SECURITY, Miss.NEXT, ("EgressDefault", "L3Forwarding"),
    "NetworkPolicy egress allow rules of local source pods (flows.policy)")
EGRESS_DEFAULT = _declare(
    "EgressDefault", Stage.EGRESS_SECURITY, Miss.NEXT, ("L3Forwarding",),
    "NetworkPolicy egress default deny of selected local pods (flows.policy)")
L3_FORWARDING = _declare(
    "L3Forwarding", Stage.ROUTING, Miss.DROP, ("IngressRule",),
    "route by ip_dst: rewrite MACs, dec_ttl, pick the output port into reg1")
INGRESS_RULE = _declare(
    "IngressRule", Stage.INGRESS_SECURITY, Miss.NEXT, ("IngressDefault", "ConntrackCommit"),
    "NetworkPolicy ingress allow rules of local destination pods (flows.policy)")
INGRESS_DEFAULT = _declare(
    "IngressDefault", Stage.INGRESS_SECURITY, Miss.NEXT, ("ConntrackCommit",),
    "NetworkPolicy ingress default deny of selected local pods (flows.policy)")
CONNTRACK_COMMIT = _declare(
    "ConntrackCommit", Stage.CONNTRACK_COMMIT, Miss.NEXT, ("Output",),
    "commit new connections; mark those that entered from the gateway")
OUTPUT = _declare(
    "Output", Stage.OUTPUT, Miss.DROP, (),
    "output to the port chosen in reg1")
# fmt: on

TABLES: Final[tuple[TableSpec, ...]] = tuple(_TABLES)
_BY_NAME: Final[dict[str, TableSpec]] = {t.name: t for t in TABLES}


class Priority(enum.IntEnum):
    """Priority bands shared by all tables."""

    MISS = 0
    LOW = 100  # catch-alls: default route, cluster-wide ARP answer
    NORMAL = 200  # exact per-object flows
    HIGH = 210  # exceptions that must win over NORMAL (ct replies via the gateway)
    TOP = 220  # exceptions to HIGH exceptions (underlay: ARP for our pods, pod-to-pod)


def by_name(name: str) -> TableSpec:
    """Return the declared table called ``name``; raise ``PipelineError`` if none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise PipelineError(f"no table named {name!r} is declared") from None


def is_declared(spec: TableSpec) -> bool:
    """Return whether ``spec`` is one of the declared tables (not a look-alike)."""
    return spec.table_id < len(TABLES) and TABLES[spec.table_id] == spec


def next_table(spec: TableSpec) -> TableSpec | None:
    """Return the table declared right after ``spec`` (where a NEXT miss goes)."""
    return TABLES[spec.table_id + 1] if spec.table_id + 1 < len(TABLES) else None


def table_names() -> dict[int, str]:
    """Return ``{table_id: name}``, e.g. for the OVSDB Flow_Table ``name`` column."""
    return {t.table_id: t.name for t in TABLES}


def check(tables: tuple[TableSpec, ...]) -> None:
    """Validate a pipeline declaration; raise ``PipelineError`` on the first problem.

    Names are unique CamelCase; every next table is declared later; a NEXT miss
    has a following table that is among its allowed next tables.
    """
    names = [t.name for t in tables]
    for index, spec in enumerate(tables):
        if not _CAMEL.match(spec.name) or names.count(spec.name) != 1:
            raise PipelineError(f"table {spec.name!r}: name must be unique CamelCase")
        if spec.table_id != index:
            raise PipelineError(f"table {spec.name!r}: id {spec.table_id} != position {index}")
        for target in spec.next_names:
            if target not in names[index + 1 :]:
                raise PipelineError(f"table {spec.name!r}: next {target!r} not declared after it")
        if spec.miss is Miss.NEXT and (
            index + 1 == len(tables) or names[index + 1] not in spec.next_names
        ):
            raise PipelineError(f"table {spec.name!r}: NEXT miss needs the following table allowed")


check(TABLES)
