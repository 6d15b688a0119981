"""Table specifications: the vocabulary ``flows/pipeline.py`` declares tables with.

A ``TableSpec`` is a checked contract (after faucet's ``ValveTableConfig``): its
name, stage, what a table miss does, and which tables a flow in it may jump to.
Table numbers exist only because OpenFlow needs them; they come from the order
of declaration in ``flows/pipeline.py`` and code never writes them by hand.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class PipelineError(ValueError):
    """A flow or declaration breaks the pipeline contract."""


class Stage(enum.Enum):
    """Pipeline stages, in packet order."""

    CLASSIFIER = "classifier"
    VALIDATION = "validation"
    CONNTRACK_STATE = "conntrack-state"
    PRE_ROUTING = "pre-routing"
    EGRESS_SECURITY = "egress-security"
    ROUTING = "routing"
    INGRESS_SECURITY = "ingress-security"
    CONNTRACK_COMMIT = "conntrack-commit"
    OUTPUT = "output"


class Miss(enum.Enum):
    """What a packet that matches no flow in a table does."""

    DROP = "drop"
    NEXT = "next"  # goto the next table in declaration order


@dataclass(frozen=True)
class TableSpec:
    """One declared table. Build instances only through ``flows.pipeline``."""

    name: str  # CamelCase, exactly what `ovs-ofctl --names dump-flows` shows
    stage: Stage
    miss: Miss
    next_names: tuple[str, ...]  # tables a flow here may goto (incl. ct(table=))
    table_id: int  # from declaration order; used only when talking OpenFlow
    doc: str = ""

    def goto(self) -> Goto:
        """Return the instruction that jumps to this table.

        The jump is checked when the ``Flow`` holding it is built: the flow's
        own table must list this table in ``next_names``.
        """
        return Goto(self)

    def allows(self, target: TableSpec) -> bool:
        """Return whether a flow in this table may jump to ``target``."""
        return target.name in self.next_names and target.table_id > self.table_id


@dataclass(frozen=True)
class Goto:
    """``goto_table`` instruction; always the last item of a flow's actions."""

    table: TableSpec
