"""Typed OVSDB errors; each class fills a message template from named fields.

The fields are also attributes (``err.port``, ``err.reason``), so callers such
as the CNI layer can map them to protocol error codes without parsing text.
"""

from __future__ import annotations


class OvsdbError(Exception):
    """Base class: an OVSDB operation failed. Fields: ``reason``."""

    message = "OVSDB operation failed: %(reason)s"

    def __init__(self, **fields: object) -> None:
        self.fields = fields
        for key, value in fields.items():
            setattr(self, key, value)
        super().__init__(self.message % fields)


class OvsdbUnavailable(OvsdbError):
    """The server cannot be reached (connect failed or the session is down)."""

    message = "OVSDB server at %(remote)s is unavailable: %(reason)s"
    remote: str
    reason: str

    def __init__(self, remote: str, reason: str) -> None:
        super().__init__(remote=remote, reason=reason)


class OvsdbTimeout(OvsdbError):
    """An operation did not finish in time. It may still complete later."""

    message = "OVSDB %(what)s did not finish within %(timeout).1f s"
    what: str
    timeout: float

    def __init__(self, what: str, timeout: float) -> None:
        super().__init__(what=what, timeout=timeout)


class PortAddFailed(OvsdbError):
    """ovs-vswitchd could not open the port (ofport -1 / Interface.error set)."""

    message = "could not add port %(port)s: %(reason)s"
    port: str
    reason: str

    def __init__(self, port: str, reason: str) -> None:
        super().__init__(port=port, reason=reason)


class PortConflict(PortAddFailed):
    """A port with this name exists but belongs to something else."""


class PortMissing(OvsdbError):
    """A port that had to exist does not."""

    message = "port %(port)s does not exist"
    port: str

    def __init__(self, port: str) -> None:
        super().__init__(port=port)


class BridgeMissing(OvsdbError):
    """The bridge named in an operation does not exist."""

    message = "bridge %(bridge)s does not exist"
    bridge: str

    def __init__(self, bridge: str) -> None:
        super().__init__(bridge=bridge)


class OfportRangeExhausted(OvsdbError):
    """Every OpenFlow port number in the requested range is taken."""

    message = "no free ofport in range [%(low)d, %(high)d]"
    low: int
    high: int

    def __init__(self, low: int, high: int) -> None:
        super().__init__(low=low, high=high)
