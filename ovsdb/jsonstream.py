"""A fast drop-in for python-ovs' pure-Python JSON stream parser.

# why: the `ovs` wheel from PyPI is built without its C extension, so python-ovs
# parses every OVSDB message one character at a time in Python (`ovs.json.Parser`).
# Adding one pod port made the IDL thread spend milliseconds parsing the update
# and the reply, on the path of every CNI ADD and DEL. This parser only finds
# where a message ends (bracket depth outside strings, with a C-level regex) and
# hands the whole text to the standard library's C JSON decoder.

`install()` swaps it in when python-ovs has no C parser; it implements the part
of the `ovs.json.Parser` interface that python-ovs uses: `feed(text)` returns
how many characters belong to the current value, `is_done()`, and `finish()`
returns the value or, like the original, an error message string.
"""

from __future__ import annotations

import json
import re
from typing import Any

import ovs.json

# A string (complete when group 1 holds the closing quote) or a bracket.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*("?)|[\[\]{}]', re.DOTALL)
_SPACE = " \t\n\r"


class StreamParser:
    """Parses one JSON object or array fed in pieces (as ``ovs.json.Parser``)."""

    def __init__(self, check_trailer: bool = False) -> None:
        self.check_trailer = check_trailer
        self._parts: list[str] = []
        self._tail = ""  # an unfinished string, scanned again with the next piece
        self._depth = 0
        self._started = False
        self._done = False
        self._error: str | None = None

    def feed(self, text: str) -> int:
        """Take characters of `text` up to the end of the value; return how many."""
        if self._done:
            return 0
        data, offset = self._tail + text, len(self._tail)
        self._tail = ""
        if not self._started:
            body = data.lstrip(_SPACE)
            if not body:
                return len(text)
            if body[0] not in "{[":
                return self._fail("syntax error at beginning of input", len(text))
            self._started = True
        for match in _TOKEN.finditer(data):
            char = data[match.start()]
            if char == '"':
                if not match.group(1):
                    self._parts.append(data[: match.start()])
                    self._tail = data[match.start() :]
                    return len(text)
            elif char in "{[":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    return self._complete(data, match.end(), offset, len(text))
        self._parts.append(data)
        return len(text)

    def _complete(self, data: str, end: int, offset: int, fed: int) -> int:
        self._parts.append(data[:end])
        self._done = True
        if self.check_trailer and data[end:].strip(_SPACE):
            self._error = "trailing garbage at end of input"
            return fed
        return end - offset

    def _fail(self, message: str, fed: int) -> int:
        self._error, self._done = message, True
        return fed

    def is_done(self) -> bool:
        """Whether a whole value (or an error) has been read."""
        return self._done

    def finish(self) -> Any:
        """The parsed value, or an error message (a str) as python-ovs expects."""
        if self._error is not None:
            return self._error
        if not self._done:
            return "unexpected end of input"
        try:
            return json.loads("".join(self._parts))
        except ValueError as exc:
            return f"syntax error: {exc}"


def install() -> bool:
    """Make python-ovs use `StreamParser` if it has no C parser; True if it does now."""
    if ovs.json.PARSER == ovs.json.PARSER_C:
        return False
    ovs.json.Parser = StreamParser
    return True
