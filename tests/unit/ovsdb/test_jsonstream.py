"""ovsdb.jsonstream.StreamParser: the same values as json.loads, fed in any pieces."""

from __future__ import annotations

import json
import random

import pytest

from ovsdb.jsonstream import StreamParser

MESSAGES = [
    {"id": 1, "result": [{"uuid": ["uuid", "0e5c"]}, {}], "error": None},
    {"method": "update2", "params": [None, {"Interface": {"x": {"modify": {"mtu": 1450}}}}]},
    {"s": 'brackets ] } [ { and "quotes" \\ back\\slashes', "u": "é ☃ 😀 \u0001"},
    [1, -2.5e3, True, False, None, [], {}, "", [[["deep"]]]],
]


def feed_all(text: str, cut: list[int]) -> list[object]:
    """Feed `text` split at `cut` positions, as python-ovs' jsonrpc does; collect values."""
    values: list[object] = []
    parser = StreamParser()
    pieces = [text[a:b] for a, b in zip([0, *cut], [*cut, len(text)], strict=True)]
    for piece in pieces:
        while piece:
            used = parser.feed(piece)
            piece = piece[used:]
            if parser.is_done():
                values.append(parser.finish())
                parser = StreamParser()
    return values


@pytest.mark.parametrize("seed", range(40))
def test_concatenated_messages_in_random_pieces(seed: int) -> None:
    rnd = random.Random(seed)
    messages = [rnd.choice(MESSAGES) for _ in range(5)]
    text = " \n".join(json.dumps(m, ensure_ascii=rnd.random() < 0.5) for m in messages)
    cut = sorted(rnd.sample(range(1, len(text)), k=min(len(text) - 1, rnd.randint(1, 40))))
    assert feed_all(text, cut) == messages


def test_every_single_character_split() -> None:
    text = json.dumps(MESSAGES[2])
    assert feed_all(text, list(range(1, len(text)))) == [MESSAGES[2]]


@pytest.mark.parametrize("text", ['"a string"', "42", "nope"])
def test_a_top_level_value_must_be_an_object_or_array(text: str) -> None:
    parser = StreamParser()
    parser.feed(text)
    assert parser.is_done() and isinstance(parser.finish(), str)


def test_errors_are_reported_as_strings() -> None:
    parser = StreamParser()
    parser.feed('{"a": tru}')
    assert parser.is_done() and "syntax error" in str(parser.finish())
    trailer = StreamParser(check_trailer=True)
    trailer.feed('{"a": 1} x')
    assert trailer.finish() == "trailing garbage at end of input"
    unfinished = StreamParser()
    unfinished.feed('{"a": [1, 2')
    assert not unfinished.is_done() and unfinished.finish() == "unexpected end of input"
