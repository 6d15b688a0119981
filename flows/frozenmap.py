"""``FrozenMap``: an immutable, hashable, shared ``str``-keyed mapping (labels, named ports).

Equal maps are one object: constructing a map equal to one that is alive
returns that one. A cluster's pods carry few distinct label sets and named
port sets (a Deployment's replicas share theirs), so 10 000 pods hold tens of
maps instead of 20 000, and the keys and values parsed from each pod's JSON
are freed right after it is read.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import Any, Generic, TypeVar

_V = TypeVar("_V")
# why weak values: a map lives as long as some pod, selector or namespace holds it.
_LIVE: weakref.WeakValueDictionary[tuple[tuple[str, Any], ...], FrozenMap[Any]] = (
    weakref.WeakValueDictionary()
)


class FrozenMap(Mapping[str, _V], Generic[_V]):
    """An immutable, hashable ``str``-keyed mapping; equal live maps are the same object."""

    __slots__ = ("_data", "_hash", "__weakref__")
    _data: dict[str, _V]
    _hash: int | None

    def __new__(cls, items: Mapping[str, _V] | Iterable[tuple[str, _V]] = ()) -> FrozenMap[_V]:
        if type(items) is cls:
            return items
        pairs = tuple(sorted((_intern(k), _intern(v)) for k, v in dict(items).items()))
        try:
            key_hash = hash(pairs)
        except TypeError:  # why: an unhashable value; such a map is neither shared nor hashable
            return cls._make(pairs, None)
        found = _LIVE.get(pairs)
        if found is None:
            found = _LIVE.setdefault(pairs, cls._make(pairs, key_hash))
        return found

    @classmethod
    def _make(cls, pairs: tuple[tuple[str, _V], ...], key_hash: int | None) -> FrozenMap[_V]:
        self = super().__new__(cls)
        self._data = dict(pairs)
        self._hash = key_hash
        return self

    def __getitem__(self, key: str) -> _V:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    # why: selectors call these for every pod on every policy compile; the
    # Mapping mixins would go through __getitem__/__iter__ in Python.
    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: str, default: Any = None) -> Any:
        """``self[key]`` or ``default``."""
        return self._data.get(key, default)

    def items(self) -> ItemsView[str, _V]:
        """The (key, value) pairs, sorted by key."""
        return self._data.items()

    def keys(self) -> KeysView[str]:
        """The keys, sorted."""
        return self._data.keys()

    def values(self) -> ValuesView[_V]:
        """The values, in key order."""
        return self._data.values()

    def __hash__(self) -> int:
        if self._hash is None:
            return hash(tuple(self._data.items()))  # raises TypeError, as the values do
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if isinstance(other, FrozenMap):
            return self._data == other._data
        return Mapping.__eq__(self, other)

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenMap, (self._data,))


def _intern(value: Any) -> Any:
    # why: label keys and values repeat across maps that are not equal as a whole
    return sys.intern(value) if type(value) is str else value
